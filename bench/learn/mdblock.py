"""bench/learn/mdblock.py - the generated blocks of bench/results/learn.md: each script owns the
text between `<!-- TAG: ... -->` and `<!-- /TAG -->` and replaces only that (calib.py, finetune.py);
report.py rewrites the rest and keeps the blocks."""
import os, re


def replace(out, tag, section, title="# Learning from the shop's photos\n\n"):
    """Writes section (which starts with `<!-- TAG:` and ends with `<!-- /TAG -->`) into the file out
    in place of its old block, or appends it."""
    text = open(out).read() if os.path.exists(out) else title
    m = re.search(r"<!-- %s:.*?<!-- /%s -->\n?" % (tag, tag), text, re.S)
    text = text[:m.start()] + section + text[m.end():] if m else text.rstrip("\n") + "\n\n" + section
    open(out, "w").write(text)


def blocks(out, tags=("calib", "finetune")):
    """The generated blocks in the file out (none when it does not exist), in file order."""
    if not os.path.exists(out):
        return []
    alt = "|".join(tags)
    return [m.group(0) for m in re.finditer(r"<!-- (%s):.*?<!-- /\1 -->\n?" % alt, open(out).read(), re.S)]
