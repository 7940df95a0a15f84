"""A gRPC origin for the tests: grpcio's server over h2c (plain HTTP/2 with
prior knowledge), generic handlers on raw bytes, no generated code.

Service `warren.test.Echo`:
  Unary         answers b"echo: " + request; trailing metadata x-origin-trailer.
  ServerStream  the request is a count N (ASCII); answers N messages,
                message(i) = b"message %05d " + b"x" * (i % 97).
  Bidi          answers each request message as it arrives, upper-cased.
  Missing       ends with NOT_FOUND and the message "no such thing: <request>",
                before any message (a trailers-only response).

Usage: grpc_server.py HOST:PORT   (prints "listening" once it serves)
"""

import sys
from concurrent import futures

import grpc

SERVICE = "warren.test.Echo"


def message(i):
    return b"message %05d " % i + b"x" * (i % 97)


def unary(request, context):
    context.set_trailing_metadata((("x-origin-trailer", "unary-done"),))
    return b"echo: " + request


def server_stream(request, context):
    for i in range(int(request)):
        yield message(i)
    context.set_trailing_metadata((("x-origin-trailer", "stream-done"),))


def bidi(requests, context):
    for request in requests:
        yield request.upper()


def missing(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


def main():
    addr = sys.argv[1]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(addr) == 0:
        sys.exit("cannot listen on " + addr)
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
