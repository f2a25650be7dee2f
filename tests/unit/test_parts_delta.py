"""Packing a request from the previous one of its session gives exactly what packing it whole gives, whatever
changed between them, and reuses the previous request's parts when the change is small."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccany_addon.flowlog.parts import pack
from ccany_addon.flowlog.parts_delta import pack_after
from ccany_addon.util.json_codec import dumps

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=400)
block = st.fixed_dictionaries({"type": st.just("text"), "text": text})
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                  "content": st.one_of(text, st.lists(block, max_size=3))})


def body(seed: dict) -> dict:
    return {"model": "claude-x", "messages": seed["messages"], "system": seed["system"],
            "tools": [{"name": f"Tool{n}", "description": "Does a thing. " * 30} for n in range(3)],
            "max_tokens": 1000, "stream": True}


edits = st.lists(st.tuples(st.sampled_from(["append", "edit", "drop", "system0", "marker", "reorder", "spaces",
                                            "tools", "bigint", "placeholder"]), message, st.integers(0, 50)),
                 min_size=1, max_size=4)


def edited(value: dict, changes: list) -> bytes:
    value = copy.deepcopy(value)
    spaced = False
    for kind, new, at in changes:
        messages = value["messages"]
        if kind == "append":
            messages.append(new)
        elif kind == "edit" and messages:
            messages[at % len(messages)] = new
        elif kind == "drop" and messages:
            del messages[at % len(messages)]
        elif kind == "system0":
            value["system"][0] = {"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.332.{at};"}
        elif kind == "marker" and messages:
            for item in messages:
                if isinstance(item["content"], list):
                    for one in item["content"]:
                        one.pop("cache_control", None)
            last = messages[at % len(messages)]
            if isinstance(last["content"], list) and last["content"]:
                last["content"][-1]["cache_control"] = {"type": "ephemeral"}
        elif kind == "reorder":
            value = dict(reversed(list(value.items())))
        elif kind == "spaces":
            spaced = True
        elif kind == "tools":
            value["tools"] = value.get("tools", [])[1:]
        elif kind == "bigint" and messages:
            messages[at % len(messages)] = {"role": "user", "content": [{"type": "text", "n": 2**70 + at}]}
        elif kind == "placeholder" and messages:
            messages.append({"role": "user", "content": "ccany-run-" + "0" * 32})
    return json.dumps(value, ensure_ascii=False).encode() if spaced else dumps(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"messages": st.lists(message, min_size=0, max_size=40),
                              "system": st.lists(block, min_size=1, max_size=3)}), edits)
def test_packing_from_the_previous_request_is_packing_it_whole(seed: dict, changes: list) -> None:
    before = body(seed)
    previous = pack(dumps(before)).layout
    assert previous is not None  # our own compact JSON: its layout is known
    raw = edited(before, changes)
    whole = pack(raw)
    delta = pack_after(previous, raw)
    if delta is not None:
        assert (delta.manifest, delta.parts, delta.prompt) == (whole.manifest, whole.parts, whole.prompt)
        assert (delta.layout is None) == (whole.layout is None)


def test_a_turn_of_a_long_session_reuses_the_previous_parts() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": f"step {n} " + "word " * 400}]}
                for n in range(200)]
    before = {"model": "m", "messages": messages, "system": [{"type": "text", "text": "billing 1"},
                                                             {"type": "text", "text": "You help. " * 200}],
              "tools": [{"name": "T", "description": "x " * 2000}]}
    after = {**before, "messages": [*messages, {"role": "user", "content": "go on"}],
             "system": [{"type": "text", "text": "billing 2"}, before["system"][1]]}
    previous = pack(dumps(before)).layout
    delta = pack_after(previous, dumps(after))
    assert delta is not None and delta.manifest == pack(dumps(after)).manifest
    # what was parsed again is the new message and the billing block, not the 400 KB around them
    assert delta.layout is not None and delta.layout.fields[1].data[:200] == previous.fields[1].data


def test_another_request_altogether_is_packed_whole() -> None:
    previous = pack(dumps({"model": "m", "messages": [{"role": "user", "content": "a" * 5000}]})).layout
    assert pack_after(previous, dumps({"model": "m", "messages": [{"role": "user", "content": "b" * 5000}]})) is None
    assert pack_after(previous, b"not json at all " * 400) is None
