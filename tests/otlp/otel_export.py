"""Exports GenAI spans to a TruLayer Server with the real OpenTelemetry SDK.

Usage: otel_export.py URL API_KEY MODE
MODE is `proto`, `proto-gzip` or `json` (the OTLP/HTTP JSON exporter).

Spans go through a BatchSpanProcessor that only exports on force_flush, so
the requests are deterministic: trace A in one request, then trace B's child
alone, then trace B's root alone (a trace split across requests, child
first). Prints one JSON object: the trace ids, each span's trace id, id,
parent and times, and the span names of each request in the order they were
sent. Any failed export makes the script exit non-zero.
"""

import json
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

url, api_key, mode = sys.argv[1:4]
endpoint = f"{url}/v1/otlp/traces"
headers = {"Authorization": f"Bearer {api_key}"}

if mode == "proto":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers)
elif mode == "proto-gzip":
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(
        endpoint=endpoint, headers=headers, compression=Compression.Gzip
    )
elif mode == "json":
    from opentelemetry.exporter.otlp.json.http import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers)
else:
    sys.exit(f"unknown mode {mode!r}")


class Recording(SpanExporter):
    """Passes spans to the real exporter and keeps what each export did.

    The SDK only logs a failed export; keeping the results lets the script
    fail instead, and the recorded spans are the ids and times that were
    actually sent.
    """

    def __init__(self, inner):
        self.inner = inner
        self.requests = []
        self.spans = []
        self.failures = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.failures += 1
        self.requests.append([s.name for s in spans])
        self.spans.extend(spans)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


recording = Recording(exporter)
provider = TracerProvider(
    resource=Resource.create(
        {"service.name": "otel-test-service", "deployment.environment": "test"}
    )
)
# A long schedule delay: nothing is exported until flush() asks for it.
provider.add_span_processor(
    BatchSpanProcessor(recording, schedule_delay_millis=600_000)
)
tracer = provider.get_tracer("otel-export-test", "1.2.3")


def flush():
    if not provider.force_flush(30_000):
        sys.exit("force_flush timed out")
    if recording.failures:
        sys.exit(f"{recording.failures} export(s) failed; see the log above")


def pause():
    # Every span lasts a few milliseconds, so latencies and start-time
    # ordering are well above the server's millisecond resolution.
    time.sleep(0.02)


# Trace A: an agent run with one span of every kind the server maps.
with tracer.start_as_current_span(
    "agent-run",
    attributes={
        "input.value": "What is the weather in Paris?",
        "output.value": "It is sunny.",
        "custom.flag": "on",
    },
) as root:
    pause()
    with tracer.start_as_current_span(
        "chat gpt-4o",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 45,
            "gen_ai.prompt": "Weather in Paris?",
            "gen_ai.completion": "Sunny",
        },
    ):
        pause()
    with tracer.start_as_current_span(
        "execute_tool get_weather",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
        },
    ):
        pause()
    with tracer.start_as_current_span(
        "vector search", attributes={"db.system": "chroma"}
    ):
        pause()
    with tracer.start_as_current_span(
        "chat claude",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet",
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 5,
        },
    ) as span:
        pause()
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
    with tracer.start_as_current_span("parse") as span:
        pause()
        # Recorded without raising: the status carries no description, so
        # the exception event is the only account of the error.
        span.record_exception(ValueError("bad input"))
        span.set_status(Status(StatusCode.ERROR))
    pause()
flush()

# Trace B: the child reaches the server in a request before its root's.
with tracer.start_as_current_span("split-root") as split_root:
    pause()
    with tracer.start_as_current_span(
        "split-child",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 7,
            "gen_ai.usage.output_tokens": 3,
        },
    ):
        pause()
    flush()
    pause()
flush()
provider.shutdown()

print(
    json.dumps(
        {
            "traces": {
                "a": format(root.get_span_context().trace_id, "032x"),
                "b": format(split_root.get_span_context().trace_id, "032x"),
            },
            "spans": {
                s.name: {
                    "trace_id": format(s.context.trace_id, "032x"),
                    "span_id": format(s.context.span_id, "016x"),
                    "parent": format(s.parent.span_id, "016x") if s.parent else None,
                    "start_ns": s.start_time,
                    "end_ns": s.end_time,
                }
                for s in recording.spans
            },
            "requests": recording.requests,
        }
    )
)
