"""Drives the real `trulayer` SDK against a TruLayer Server.

Usage: send_traces.py ENDPOINT API_KEY PROJECT BAD_KEY
Prints one JSON object: the ids of the traces it sent, of the evaluations
it triggered, and what the client with the bad key ended up as.
"""

import json
import sys
import time
import warnings

from trulayer import TruLayerClient

endpoint, api_key, project, bad_key = sys.argv[1:5]
warnings.simplefilter("ignore")

client = TruLayerClient(
    api_key=api_key, project_name=project, endpoint=endpoint, flush_interval=0.2
)
# The sender loop starts in a background thread; a flush before it runs is lost.
time.sleep(0.5)

ids = {}
with client.trace(
    "rag-query",
    session_id="session-42",
    external_id="req-0001",
    tags=["rag", "prod"],
    metadata={"user_id": "u-7", "attempt": 2, "flags": {"beta": True}},
) as t:
    ids["rag"] = t._data.id
    t.set_input("What is the capital of France?")
    with t.span("vector-search", span_type="retrieval") as s:
        s.set_input("capital of France")
        s.set_output('["Paris is the capital of France."]')
        s.set_metadata(index="geo", k=3)
    with t.span("openai.chat", span_type="llm") as s:
        s.set_model("gpt-4o-mini")
        s.set_input("Answer: What is the capital of France?")
        s.set_output("Paris.")
        s.set_tokens(prompt=42, completion=3)
        s.set_cost(0.000123)
    t.set_output("Paris.")
    t.set_model("gpt-4o-mini")

with client.trace("tagged", tag_map={"env": "staging", "team": "search"}) as t:
    ids["tagged"] = t._data.id
    t.set_tag("release", "2026.11")
    t.set_input("hello")

try:
    with client.trace("failing", session_id="session-42") as t:
        ids["failing"] = t._data.id
        with t.span("tool-call", span_type="tool") as s:
            s.set_input("divide 1 by 0")
            raise ZeroDivisionError("division by zero")
except ZeroDivisionError:
    pass

client.flush()

# Evaluations of stored traces: the client gets each one's id back, or None
# (with a warning) when the server refuses, as for a trace it never stored.
evals = {
    "pii": client.eval(ids["rag"], "rule", "pii_leakage"),
    "judge": client.eval(ids["tagged"], "llm", "toxicity"),
    "unknown": client.eval("00000000-0000-4000-8000-000000000000", "rule", "not_empty"),
}

bad = TruLayerClient(
    api_key=bad_key, project_name=project, endpoint=endpoint, flush_interval=0.2
)
time.sleep(0.5)
with bad.trace("never-stored") as t:
    ids["rejected"] = t._data.id
bad.flush()
sender = bad._batch
fatal = sender.fatal_error
print(
    json.dumps(
        {
            "ids": ids,
            "evals": evals,
            "bad_disabled": sender.disabled,
            "bad_error": type(fatal).__name__ if fatal else None,
            "bad_code": getattr(fatal, "code", None),
        }
    )
)
