"""Creates traces through the real `trulayer` SDK in a tight loop, as an
application under a burst does, and lets the SDK send them its own way.

Usage: burst.py ENDPOINT API_KEY PROJECT COUNT
Prints one JSON object: the ids of the traces created, how many the server
holds, and the warnings the SDK raised (it warns when it drops a batch).

The SDK sends a batch whenever its queue holds 50 traces, taking all that
is queued by then, so a burst goes out in batches of any size. Its shutdown
abandons batches still being sent, so the script keeps running, as an
application would, until the server holds the burst or a minute has passed.
"""

import json
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone

import httpx
from trulayer import TruLayerClient

endpoint, api_key, project, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    client = TruLayerClient(api_key=api_key, project_name=project, endpoint=endpoint)
    # The sender loop starts in a background thread; a flush before it runs is lost.
    time.sleep(0.5)
    system_prompt = "You are a support assistant for an online bookshop. " * 20
    ids = []
    for i in range(count):
        with client.trace(f"burst-{i}", session_id=f"burst-session-{i % 50}") as t:
            ids.append(t._data.id)
            t.set_input(system_prompt + f"Where is my order {i}?")
            with t.span("openai.chat", span_type="llm") as s:
                s.set_model("gpt-4o-mini")
                s.set_tokens(prompt=180, completion=12)
                s.set_output(f"Order {i} ships tomorrow.")
            t.set_output(f"Order {i} ships tomorrow.")
    now = datetime.now(timezone.utc)
    window = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    stored = 0
    deadline = time.monotonic() + 60
    while stored < count and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = httpx.get(
            f"{endpoint}/v1/metrics",
            params=window,
            headers={"Authorization": f"Bearer {api_key}"},
        )
        stored = answer.json().get("total_traces", 0)
    client.shutdown()

print(
    json.dumps(
        {"ids": ids, "stored": stored, "warnings": [str(w.message) for w in caught]}
    )
)
