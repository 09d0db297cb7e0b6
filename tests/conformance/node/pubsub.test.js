// The official @google-cloud/pubsub Node.js client against the broker at
// PUBSUB_EMULATOR_HOST: publish, subscribe with ack and nack (redelivery),
// dead letters. Run by tests/system/conformance.rs; by hand:
//   PUBSUB_EMULATOR_HOST=127.0.0.1:8085 npm test --prefix tests/conformance/node
'use strict';

const {test, after} = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const {PubSub} = require('@google-cloud/pubsub');

if (!process.env.PUBSUB_EMULATOR_HOST) {
  throw new Error('PUBSUB_EMULATOR_HOST must point at the broker under test (host:port)');
}
const projectId = process.env.PUBSUB_PROJECT_ID || 'conformance';
const pubsub = new PubSub({projectId});
const created = [];

function unique(label) {
  return `node-${label}-${crypto.randomBytes(4).toString('hex')}`;
}

async function newTopic(label) {
  const [topic] = await pubsub.createTopic(unique(label));
  created.push(topic);
  return topic;
}

async function newSubscription(topic, label, options = {}) {
  const [sub] = await topic.createSubscription(unique(label), options);
  created.unshift(sub); // deleted before topics
  return sub;
}

// Listens on `sub` until `done()` is true (or `timeoutMs`); stream errors fail.
function listen(sub, onMessage, done, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(finish, timeoutMs);
    const poll = setInterval(() => done() && finish(), 50);
    let finished = false;
    function finish(error) {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearInterval(poll);
      sub.removeAllListeners('message');
      sub.close().then(() => (error ? reject(error) : resolve()), reject);
    }
    sub.on('message', onMessage);
    sub.on('error', finish);
  });
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

after(async () => {
  for (const resource of created) {
    try {
      await resource.delete();
    } catch {
      // already gone
    }
  }
  await pubsub.close();
});

test('admin: topic and subscription exist, duplicates are rejected', async () => {
  const topic = await newTopic('admin');
  const [exists] = await topic.exists();
  assert.equal(exists, true);
  await assert.rejects(pubsub.createTopic(topic.name), err => err.code === 6); // ALREADY_EXISTS
  const sub = await newSubscription(topic, 'admin-sub', {ackDeadlineSeconds: 20});
  const [metadata] = await sub.getMetadata();
  assert.equal(metadata.ackDeadlineSeconds, 20);
  assert.equal(metadata.topic, topic.name);
  const [subs] = await topic.getSubscriptions();
  assert.deepEqual(subs.map(s => s.name), [sub.name]);
});

test('publish with attributes and batching; subscribe and ack', async () => {
  const topic = await newTopic('publish');
  const sub = await newSubscription(topic, 'publish-sub');
  const batched = pubsub.topic(topic.name, {batching: {maxMessages: 5, maxMilliseconds: 20}});
  const ids = await Promise.all(
    Array.from({length: 25}, (_, i) =>
      batched.publishMessage({data: Buffer.from(`report ${i}`), attributes: {reportId: String(i)}}),
    ),
  );
  assert.equal(new Set(ids).size, 25);

  const received = new Map();
  await listen(
    sub,
    message => {
      received.set(message.id, message);
      message.ack();
    },
    () => received.size >= 25,
    20000,
  );
  assert.deepEqual([...received.keys()].sort(), [...ids].sort());
  for (const [i, id] of ids.entries()) {
    const message = received.get(id);
    assert.equal(message.data.toString(), `report ${i}`);
    assert.deepEqual(message.attributes, {reportId: String(i)});
    assert.ok(message.publishTime.getTime() > 0);
  }

  // Acked: nothing comes back.
  let extra = 0;
  await listen(sub, m => { extra++; m.ack(); }, () => false, 1500);
  assert.equal(extra, 0);
});

test('nack is redelivered', async () => {
  const topic = await newTopic('nack');
  const sub = await newSubscription(topic, 'nack-sub');
  const id = await topic.publishMessage({data: Buffer.from('nack me once')});
  const deliveries = [];
  await listen(
    sub,
    message => {
      deliveries.push(message.id);
      if (deliveries.length === 1) message.nack();
      else message.ack();
    },
    () => deliveries.length >= 2,
    20000,
  );
  assert.deepEqual(deliveries.slice(0, 2), [id, id]);
});

test('dead letter after maxDeliveryAttempts nacks, with deliveryAttempt counting', async () => {
  const topic = await newTopic('dl');
  const dead = await newTopic('dl-dead');
  const deadSub = await newSubscription(dead, 'dl-dead-sub');
  const sub = await newSubscription(topic, 'dl-sub', {
    deadLetterPolicy: {deadLetterTopic: dead.name, maxDeliveryAttempts: 5},
  });
  const id = await topic.publishMessage({data: Buffer.from('poison'), attributes: {reportId: '9'}});

  // Like an application: the source keeps nacking until the message is
  // parked (a broker may forward it only at what would be attempt 6).
  const attempts = [];
  let parked;
  await Promise.all([
    listen(
      sub,
      message => {
        attempts.push([message.id, message.deliveryAttempt]);
        message.nack();
      },
      () => parked !== undefined,
      30000,
    ),
    listen(
      deadSub,
      message => {
        parked = message;
        message.ack();
      },
      () => parked !== undefined,
      30000,
    ),
  ]);
  assert.deepEqual(attempts, [1, 2, 3, 4, 5].map(n => [id, n]));
  assert.ok(parked, 'the message reached the dead-letter topic');
  assert.equal(parked.data.toString(), 'poison');
  assert.equal(parked.attributes.reportId, '9');
  assert.equal(parked.attributes.CloudPubSubDeadLetterSourceDeliveryCount, '5');
  assert.equal(parked.attributes.CloudPubSubDeadLetterSourceSubscription, sub.name.split('/').pop());
  assert.equal(parked.attributes.CloudPubSubDeadLetterSourceSubscriptionProject, projectId);
  assert.ok(parked.attributes.CloudPubSubDeadLetterSourceTopicPublishTime);

  // Parked = acknowledged on the source subscription.
  await sleep(300);
  let again = 0;
  await listen(sub, m => { again++; m.ack(); }, () => false, 1500);
  assert.equal(again, 0);
});
