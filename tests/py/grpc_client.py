"""A gRPC client for the tests: calls grpc_server.py's service through the
edge over HTTPS (trusting the test CA, the edge's certificate checked for
the tunnel's hostname) and prints what it got as one JSON object.

Usage: grpc_client.py EDGE_HOST:PORT HOSTNAME CA_PEM STREAM_COUNT BIDI_ROUNDS
"""

import hashlib
import json
import queue
import sys

import grpc

SERVICE = "/warren.test.Echo/"


def outcome(call):
    return {
        "code": call.code().name,
        "details": call.details(),
        "trailers": {k: v for k, v in (call.trailing_metadata() or ())},
    }


def main():
    target, hostname, ca, count, rounds = sys.argv[1:6]
    count, rounds = int(count), int(rounds)
    with open(ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = [
        ("grpc.ssl_target_name_override", hostname),
        ("grpc.default_authority", hostname),
    ]
    out = {}
    with grpc.secure_channel(target, creds, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)

        unary = channel.unary_unary(SERVICE + "Unary")
        reply, call = unary.with_call(b"hello", timeout=20)
        out["unary"] = {"reply": reply.decode(), **outcome(call)}

        # Every message is hashed with its length in front, so the digest
        # says the count, the order and each message's bytes.
        stream = channel.unary_stream(SERVICE + "ServerStream")
        call = stream(str(count).encode(), timeout=60)
        digest, n = hashlib.sha256(), 0
        for msg in call:
            digest.update(len(msg).to_bytes(4, "big") + msg)
            n += 1
        out["server_stream"] = {"count": n, "sha256": digest.hexdigest(), **outcome(call)}

        # Bidirectional: each message is sent only after the answer to the
        # one before arrived, so the two directions really interleave.
        bidi = channel.stream_stream(SERVICE + "Bidi")
        to_send = queue.Queue()

        def requests():
            while True:
                item = to_send.get()
                if item is None:
                    return
                yield item

        to_send.put(b"round 0")
        call = bidi(requests(), timeout=60)
        answers = []
        for answer in call:
            answers.append(answer.decode())
            i = len(answers)
            to_send.put(b"round %d" % i if i < rounds else None)
        out["bidi"] = {"answers": answers, **outcome(call)}

        missing = channel.unary_unary(SERVICE + "Missing")
        try:
            missing(b"the-key", timeout=20)
            out["missing"] = {"code": "OK"}
        except grpc.RpcError as e:
            out["missing"] = {"code": e.code().name, "details": e.details()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
