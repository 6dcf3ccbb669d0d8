#!/usr/bin/env python3
"""Prints `heappatrol options --json` (read from stdin) as the markdown table in README.md, so the
README's table is regenerated from the one options table rather than written twice:
    heappatrol options --json | scripts/options-markdown.py"""
import json
import sys

print("| Option | Type | Default | Meaning |")
print("|---|---|---|---|")
for line in sys.stdin:
    if line.strip():
        o = json.loads(line)
        default = o["default"] if o["default"] != "" else '""'
        print("| `%s` | %s | `%s` | %s |" % (o["name"], o["type"], default, o["help"].replace("|", "\\|")))
