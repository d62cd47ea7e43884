"""Rewrite imports of the old flat packages to the enginescope namespace (one-off migration, re-runnable)."""

import re
import sys
from pathlib import Path

MOVES = [
    ("exporters.store", "enginescope.store"),
    ("exporters.queries", "enginescope.views.queries"),
    ("exporters.panels", "enginescope.views.panels"),
    ("simfleet.loadgen", "enginescope.loadgen.generator"),
    ("simfleet.openai_client", "enginescope.loadgen.openai_client"),
]
FLAT = ["collectors", "exporters", "dashboard", "deploy", "recipes", "simfleet"]


def rewrite(text: str) -> str:
    for old, new in MOVES:
        text = re.sub(rf"(?<![\w.]){re.escape(old)}\b", new, text)
    for name in FLAT:
        # dotted module paths in imports and strings: collectors.x -> enginescope.collectors.x
        text = re.sub(rf"(?<![\w./-]){name}\.(?=[a-z_])", f"enginescope.{name}.", text)
        text = re.sub(rf"^(\s*)from {name} import", rf"\1from enginescope.{name} import", text, flags=re.M)
        text = re.sub(rf"^(\s*)import {name}$", rf"\1import enginescope.{name} as {name}", text, flags=re.M)
    return text


for path in sys.argv[1:]:
    p = Path(path)
    old = p.read_text()
    new = rewrite(old)
    if new != old:
        p.write_text(new)
        print("rewrote", p)
