#!/usr/bin/env python3
"""A real SMTP server for labrelay's tests, built on aiosmtpd.

Usage: smtp_sink.py PORTFILE MAILDIR CONTROLFILE [--port N] [--auth USER:PASSWORD]

- Listens on 127.0.0.1, on port N (default 0: any free port). The port is
  written to PORTFILE (unless PORTFILE is "-") and printed as the first line
  of stdout: "listening <port>".
- Stores every accepted message in the Maildir MAILDIR (cur/, new/, tmp/
  are created), as received, preceded by "X-MailFrom:" and "X-RcptTo:"
  headers carrying the SMTP envelope.
- Before answering each RCPT and each DATA it reads CONTROLFILE (missing or
  empty means "accept"), so a test can switch behaviour at any time:
    accept        answer 250
    451           answer 451 (temporary failure)
    550           answer 550 (permanent failure)
    550-mailbox   answer RCPT 550 5.1.1, quoting the address: no such
                  mailbox
    451-data      accept RCPT, answer 451 to the end of DATA: the data has
                  been sent when the refusal comes, as with a content check
    slow SECONDS  wait SECONDS before answering DATA, then accept. The
                  message is kept even if the client has given up by then,
                  as a real server that already received the data would.
- Prints "data <Message-ID>" on stdout when a message's data has arrived
  (before the answer to DATA), "accepted <Message-ID> <file name>" once
  it is stored, and "rejected <code> [<Message-ID>]" for a refusal (the
  Message-ID when the data was there) and "slowed <Message-ID>" for a
  message held in slow mode, so a test can await each instead of
  polling.
- With --auth, requires SMTP AUTH (PLAIN or LOGIN, allowed without TLS) with
  exactly these credentials; anything else gets 535.
- Exits when stdin reaches end of file, so it never outlives the test
  process that started it.
"""

import argparse
import asyncio
import email.parser
import email.policy
import logging
import os
import sys
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult

TEMP_FAIL = "451 4.3.0 Temporary failure (smtp_sink control file)"
PERM_FAIL = "550 5.7.1 Rejected (smtp_sink control file)"
NO_MAILBOX = "550 5.1.1 <{}>: Recipient address rejected: User unknown"


def read_mode(control_file):
    try:
        with open(control_file, encoding="utf-8") as f:
            words = f.read().split()
    except FileNotFoundError:
        return ("accept", 0.0)
    if not words or words[0] == "accept":
        return ("accept", 0.0)
    if words[0] in ("451", "550", "451-data", "550-mailbox"):
        return (words[0], 0.0)
    if words[0] == "slow" and len(words) == 2:
        return ("slow", float(words[1]))
    print(f"warning unknown control {' '.join(words)!r}; accepting", flush=True)
    return ("accept", 0.0)


class Maildir:
    def __init__(self, root):
        self.root = root
        self.seq = 0
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)

    def add(self, data):
        self.seq += 1
        # Names sort in arrival order, also across restarts of the sink.
        name = f"{time.time_ns():020d}.P{os.getpid()}Q{self.seq}.smtp_sink"
        tmp = os.path.join(self.root, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.root, "new", name))
        return name


class Handler:
    def __init__(self, maildir, control_file):
        self.maildir = maildir
        self.control_file = control_file
        # Slow stores still running: a task needs a reference to live.
        self.pending = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        mode, _ = read_mode(self.control_file)
        if mode in ("451", "550"):
            print(f"rejected {mode}", flush=True)
            return TEMP_FAIL if mode == "451" else PERM_FAIL
        if mode == "550-mailbox":
            print("rejected 550", flush=True)
            return NO_MAILBOX.format(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content or b""
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
        message_id = (headers.get("Message-ID") or "-").strip()
        print(f"data {message_id}", flush=True)
        mode, delay = read_mode(self.control_file)
        if mode in ("451", "550", "451-data"):
            print(f"rejected {mode[:3]} {message_id}", flush=True)
            return PERM_FAIL if mode == "550" else TEMP_FAIL
        trace = (
            f"X-MailFrom: {envelope.mail_from}\r\n"
            f"X-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        if mode == "slow":
            print(f"slowed {message_id}", flush=True)
            # Stored after the delay even when the client closes the
            # connection meanwhile (which cancels this handler): the data
            # has arrived, as a real server that queues it would.
            stored = asyncio.ensure_future(self.store_after(delay, trace + content, message_id))
            self.pending.add(stored)
            stored.add_done_callback(self.pending.discard)
            await asyncio.shield(stored)
        else:
            self.store(trace + content, message_id)
        return "250 Message accepted for delivery"

    async def store_after(self, delay, message, message_id):
        await asyncio.sleep(delay)
        self.store(message, message_id)

    def store(self, message, message_id):
        name = self.maildir.add(message)
        print(f"accepted {message_id} {name}", flush=True)


def authenticator_for(credentials):
    user, _, password = credentials.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            auth_data is not None
            and getattr(auth_data, "login", None) == user.encode()
            and getattr(auth_data, "password", None) == password.encode()
        )
        # handled=False: aiosmtpd itself answers 535 on failure.
        return AuthResult(success=ok, handled=False)

    return authenticate


async def exit_on_stdin_eof():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("portfile")
    parser.add_argument("maildir")
    parser.add_argument("controlfile")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth", default=None, help="USER:PASSWORD to require")
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    handler = Handler(Maildir(args.maildir), args.controlfile)
    auth = {}
    if args.auth is not None:
        # Plain-text AUTH is the point here: the sink only ever listens on
        # loopback.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        auth = dict(
            authenticator=authenticator_for(args.auth),
            auth_required=True,
            auth_require_tls=False,
        )

    def protocol():
        return SMTP(handler, hostname="smtp-sink.test", loop=loop, **auth)

    server = await loop.create_server(protocol, host="127.0.0.1", port=args.port)
    port = server.sockets[0].getsockname()[1]
    if args.portfile != "-":
        tmp = args.portfile + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.portfile)
    print(f"listening {port}", flush=True)

    async with server:
        await exit_on_stdin_eof()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
