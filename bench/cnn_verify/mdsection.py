"""Replaces one section of a results Markdown file (between <!-- NAME:begin --> and
<!-- NAME:end -->, appended when missing), so several scripts can write bench/results/cnn_verify.md."""
import os


def write_section(path, name, text):
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    old = open(path).read() if os.path.exists(path) else ""
    block = begin + "\n" + text.rstrip("\n") + "\n" + end + "\n"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end) + 1:]
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    with open(path, "w") as f:
        f.write(new)
