"""An OTLP/HTTP trace receiver for the tracing tests: what a collector does with spans, reduced to writing them down.

It listens on 127.0.0.1 (port 0: any free one; the chosen port is printed first, as 'listening PORT'), takes
POST /v1/traces with a protobuf ExportTraceServiceRequest (gzip or not), decodes it with the OTLP schema from PyPI's
opentelemetry-proto, and prints each span as one JSON line:

    {"service": "cart", "name": "/checkout", "kind": "SERVER", "traceId": "...", "spanId": "...",
     "parentSpanId": "...", "status": "UNSET", "attributes": {"http.request.method": "POST", ...}}

Anything else is refused (404, 415 or 400), and the line says so, so a test sees a sender that got the protocol wrong.
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

lock = threading.Lock()


def emit(record):
    with lock:
        sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
        sys.stdout.flush()


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value"):
        return str(getattr(any_value, kind))
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def attributes(key_values):
    return {pair.key: value_of(pair.value) for pair in key_values}


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            return self.refuse(404, f"no such path {self.path}")
        if self.headers.get("Content-Type") != "application/x-protobuf":
            return self.refuse(415, f"content type {self.headers.get('Content-Type')}")
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            return self.refuse(400, f"not an ExportTraceServiceRequest: {error}")
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    emit({
                        "service": resource.get("service.name"),
                        "instance": resource.get("service.instance.id"),
                        "name": span.name,
                        "kind": trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        "traceId": span.trace_id.hex(),
                        "spanId": span.span_id.hex(),
                        "parentSpanId": span.parent_span_id.hex(),
                        "status": trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        "attributes": attributes(span.attributes),
                    })
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def refuse(self, status, reason):
        emit({"refused": status, "reason": reason})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    emit_line = f"listening {server.server_address[1]}\n"
    sys.stdout.write(emit_line)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
