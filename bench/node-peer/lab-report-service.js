// The Pet Theory lab's lab-report-service ("Build a Resilient, Asynchronous
// System with Cloud Run and Pub/Sub"), as the lab wrote it: express with
// body-parser, and a publish to `new-lab-report` per request, answering 204
// once the publish resolves and 500 if it fails. Kept as the lab had it
// (including `pubsub.topic(...)` per request) so the bench compares our
// service with the lab's own stack, not with a tuned rewrite.
//
// Two changes, both for the bench harness: it listens on 127.0.0.1 (not all
// interfaces), and it prints "lab-report-service listening on ADDR" so the
// bench knows when it is up. PUBSUB_EMULATOR_HOST points it at our broker.
const {PubSub} = require('@google-cloud/pubsub');
const pubsub = new PubSub();
const express = require('express');
const app = express();
const bodyParser = require('body-parser');
app.use(bodyParser.json());
const port = process.env.PORT || 8080;

app.listen(port, '127.0.0.1', () => {
  console.log(`lab-report-service listening on 127.0.0.1:${port}`);
});

app.post('/', async (req, res) => {
  try {
    const labReport = req.body;
    await publishPubSubMessage(labReport);
    res.status(204).send();
  }
  catch (ex) {
    console.log(ex);
    res.status(500).send(ex);
  }
})

async function publishPubSubMessage(labReport) {
  const buffer = Buffer.from(JSON.stringify(labReport));
  await pubsub.topic('new-lab-report').publish(buffer);
}
