#!/usr/bin/env python3
"""Write README.md's first C block (the one under "## A service and a call") to a file,
so the test suite compiles the sample exactly as a reader copies it."""
import sys

readme, out = sys.argv[1], sys.argv[2]
text = open(readme, encoding="utf-8").read()
section = text.index("## A service and a call")
start = text.index("```c\n", section) + len("```c\n")
end = text.index("```\n", start)
with open(out, "w", encoding="utf-8") as f:
    f.write("/* Generated from README.md by tests/readme_sample.py: edit README.md. */\n")
    f.write(text[start:end])
