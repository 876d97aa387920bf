#!/usr/bin/env python3
"""Every measured figure in the pages readers quote from links to the file it comes from.

    scripts/check-claims.py [--root DIR] [--verbose]

Two checks, one pass (this script replaces the old scripts/check-links.py):

1. Links. In README.md, results/README.md, patterns/*.md, docs/*.md and
   bench-client/README.md, every relative link `[text](target)` (not a URL, not an anchor in
   the same page) must point to a file or directory that exists.

2. Figures. In README.md, results/README.md and patterns/*.md (the pages that publish
   measurements), every measured figure must be found in a file its claim links to.

The rule, piece by piece:

- A *claim* is one table row, or one sentence of a paragraph or list item (the item's text
  joined across line breaks). A claim's *sources* are the local files its own links point to.
  A sentence without links takes those of its whole paragraph or list item (a paragraph
  usually cites once, at the end). A table row without links takes the links of the table's
  caption, the nearest block before the table in the same section (paragraph, list item or
  heading) that has local links, and of its header row. A heading without links takes the
  links of the block under it. (scripts/bench/summarize.py writes a "Source:" link to the
  run's directory before every table of results/README.md, so generated tables pass.)
- A *figure* is a number, outside `code spans`, fenced code blocks, HTML comments and link
  targets, that
    * has a decimal point (7.35), or
    * is followed by a unit: µs us ns ms s % x × /s k M B KiB MiB GiB KB kB MB GB bytes
      (26 B, 49k/s, 3.4x, 12 %; in a range "1.9-2.5 µs" or a list "7.35 / 6.53 µs" the
      unit belongs to every number of it), or
    * is written with thousands separators (49,000, 1 000).
  Not figures: plain integers (counts, close codes, list markers, "rooms of 50"), dates
  (2026-12-06, 2026-11-26T043410Z), commit hashes, numbers with two dots or more (7.1.6,
  127.0.0.1, 0.0.4), versions (a number after Node, ws, Redis, Linux, kernel, TLS, RFC,
  HTTP/, websockets, curl, zlib-rs, Python, Debian, ...), numbers glued to a word (p99.9,
  cpu0, x86_64) and the header cells of tables.
- A figure is *found* when one of the claim's sources holds a number that rounds to it: the
  figure's last digit sets the tolerance (4.0 matches 3.998, 2.6 matches 2.63), thousands
  separators are ignored on both sides (12,400 = 12400 = "12 400"), and units convert
  (2.6 ms matches 2623 µs, 49k/s matches 49000, 1.2 MiB a byte count, 39 % a fraction 0.39).
  A round integer after "~", "≈", "about", "around", "roughly" or "nearly" matches at its
  significant digits (~1,300 matches 1326). A linked directory stands for every text file
  under it, recursively.
- *Computed* figures need not be in a file. A percentage not found passes when two other
  figures of the same claim give it, as a ratio (a/b in %) or a relative difference
  (a/b - 1, 1 - a/b, in %), to within one unit of its last digit: "8.74 against 6.56 µs
  (+33 %)" needs only 8.74 and 6.56 in the file; a sign-prefixed number that is not a
  percentage (-48 B) may likewise be the difference of two figures of the claim. An "x"/"×"
  ratio (3.4x) is looked for like any figure, but when it is not found it is taken as
  computed and passes: its operands are usually in a table above, checked there.
- A figure whose claim has no local link at all is an *unlinked figure*: an error, like a
  figure not found.
- Markers, HTML comments a reader does not see (any text may follow the word, e.g.
  `<!-- not-measured: flag defaults -->`):
    * `<!-- not-measured -->`: the figures are not measurements (configuration defaults,
      limits, targets, sizes chosen by design, test counts and running times, arithmetic) or
      restate figures checked elsewhere on the page. Not checked.
    * `<!-- unverified -->`: measured, but no file holds the figure (the data was not kept,
      or the figure disagrees with its file). Not a failure, but printed as a warning on
      every run, so that it stays visible until someone links a file or fixes the text.
  A marker on a line of its own, or at the very start of a block, covers that block (a
  paragraph, a list item or a whole table); anywhere else it covers the sentence it is in
  (or the table row).

What it cannot tell: a figure is looked for anywhere in its sources, so a wrong figure that
happens to equal another number there passes. Two-digit figures linked to a large table or a
directory of JSON are checked weakly; link the narrowest file that holds the figure.

Prints each problem as `page:line: ...`, then a summary; exits 1 if there is any problem.
--verbose also prints every figure with where it was found.
"""
import argparse
import bisect
import glob
import os
import re
import sys

# Link existence only.
LINK_PAGES = ["README.md", "results/README.md", "bench-client/README.md", "patterns/*.md", "docs/*.md"]
# Link existence and figures.
CLAIM_PAGES = ["README.md", "results/README.md", "patterns/*.md"]

LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
MARKER = re.compile(r"<!--\s*(not-measured|unverified)\b.*?-->")
COMMENT = re.compile(r"<!--.*?-->")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
URL = re.compile(r"\bhttps?://\S+")

# Things that look like numbers but are not figures; blanked before figures are looked for.
NOT_FIGURES = [
    re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:?\d{2}(?::?\d{2})?Z?)?"),  # dates, timestamps
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"),  # times of day
    re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"),  # commit hashes
    re.compile(r"\d+(?:\.\d+){2,}\w*"),  # 7.1.6, 127.0.0.1, 0.0.4
    re.compile(r"\d+\.\d+\.\*"),  # 12.1.*
    # Versions and standards: a number right after a product or standard's name.
    re.compile(r"(?:\b(?:Node|node|ws|Redis|redis|Linux|kernel|TLS|RFC|websockets|curl|zlib-rs|"
               r"Python|Debian|Chromium|rustls|Prometheus|format|version|pyenv|Node\.js|HTTP)"
               r"|HTTP/|`ws`)\s?v?\d+(?:\.\d+)*\+?"),
    re.compile(r"\bv\d+(?:\.\d+)+"),
]

# A number: optional sign, digits with optional thousands separators (comma, space, no-break or
# thin spaces: "1 000" is how summarize.py prints), optional decimals. Not glued to a word or to
# another number (p99.9, cpu0, 1.2.3 are not numbers here).
SEP = "[,\u00a0\u202f\u2009 ]"
NUMBER = re.compile(
    r"(?<![\w.])(?<![A-Za-z]/)"
    r"(?P<sign>[+\u2212±]|-(?=\d))?"
    r"(?P<int>\d{1,3}(?:" + SEP + r"\d{3})+(?!\d)|\d+)"
    r"(?P<frac>\.\d+)?"
    r"(?![\w.]\d)(?!\.[\w*])")
# A unit right after a number (an optional space between, none for k, M and x).
UNIT = re.compile(
    r"(?:\s?(?P<unit>µs|us|ns|ms|[KMG]iB|[kKMG]B|B|%|bytes|s)(?![A-Za-z0-9])"
    r"|(?P<glued>k|M|x|×)(?![A-Za-z0-9]))(?P<per>/s)?"
    r"|(?P<persec>/s)(?![A-Za-z])")
# Between two numbers that share the unit of the last one: 1.9–2.5 µs, 7.35 / 6.53 µs, 3 to 7 s.
RANGE_SEP = re.compile(r"\s?(?:[-–→]|/|\bto\b|\band\b|\bvs\.?|\bor\b|\bagainst\b)\s?")
APPROX = re.compile(r"(?:~|≈|\babout|\baround|\broughly|\bnearly|\bsome)\s*$")

TIME = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
SIZE = {"B": 1, "bytes": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3,
        "kB": 1000, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}
SCALE = {"k": 1e3, "M": 1e6}

SENTENCE_END = re.compile(r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bvs\.)(?<!\betc\.)(?<=[.!?])\s+(?=[A-Z*(\[_])")


class Figure:
    def __init__(self, text, value, decimals, unit, sign, approx, start):
        self.text, self.value, self.decimals = text, value, decimals
        self.unit, self.sign, self.approx, self.start = unit, sign, approx, start

    def tolerance(self):
        """Half a unit of the last digit printed; for an approximate round integer, half a unit
        of its last significant digit."""
        if self.decimals:
            return 0.5 * 10 ** -self.decimals + 1e-9
        v = int(round(self.value))
        if self.approx and v:
            zeros = len(str(v)) - len(str(v).rstrip("0"))
            return 0.5 * 10 ** zeros
        return 0.5

    def candidates(self):
        """(value, tolerance) pairs a number in a file may have: the figure as printed, and in
        the other scales of its unit."""
        v, t = self.value, self.tolerance()
        out = [(v, t)]
        u = self.unit or ""
        base = u.split("/")[0]
        if base in TIME:
            for other in ("ns", "us", "ms", "s"):
                f = TIME[base] / TIME[other]
                out.append((v * f, t * f))
        elif base in SIZE:
            f = SIZE[base]
            out.append((v * f, t * f))
            for other in ("KiB", "MiB", "kB", "MB"):
                g = f / SIZE[other]
                out.append((v * g, t * g))
        elif base in SCALE:
            out.append((v * SCALE[base], t * SCALE[base]))
        elif base == "%":
            out.append((v / 100, t / 100))
        return out


def blank(text, pattern):
    """Replaces every match by spaces of the same length, so that offsets (and so line numbers)
    survive the cleaning."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def local_links(text):
    """The link targets of text that are paths (no URL, no same-page anchor), anchors dropped."""
    out = []
    for m in LINK.finditer(blank(text, CODE_SPAN)):
        target = m.group(2)
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = target.split("#", 1)[0]
        if path:
            out.append(path)
    return out


def clean(text):
    """The text figures are looked for in, offsets kept: no comments, code spans, URLs, link
    targets (the link's text stays), dates, hashes or versions."""
    text = blank(text, COMMENT)
    text = blank(text, URL)
    for p in NOT_FIGURES:  # before code spans go: "Node `ws` 8.23" is a version
        text = blank(text, p)
    text = blank(text, CODE_SPAN)
    text = LINK.sub(lambda m: " " * (len(m.group(0)) - len(m.group(1)) - len(m.group(2)) - 2)
                    + m.group(1) + " " * (len(m.group(2)) + 2) if not m.group(0).startswith("!")
                    else " " * len(m.group(0)), text)
    return text


def number_value(m):
    return float(re.sub(SEP, "", m.group("int")) + (m.group("frac") or ""))


def figures(text):
    """The figures of a cleaned text, as Figure objects (see the module docstring)."""
    nums = list(NUMBER.finditer(text))
    units = []
    keep = []
    for m in nums:
        u = UNIT.match(text, m.end())
        if not u and re.match(r"[A-Za-z_]", text[m.end():m.end() + 1]):
            continue  # glued to a word that is no unit: 2nd, 6455bis
        keep.append(m)
        if u:
            units.append(u.group("unit") or u.group("glued") or "")
            if u.group("per") or u.group("persec"):
                units[-1] += "/s"
            if u.group("glued") in ("x", "×") and re.match(r"\s?\d", text[u.end():]):
                units[-1] = ""  # 4000×200: a product written out, not a ratio
        else:
            units.append(None)
    nums = keep
    # A unit belongs to the numbers before it joined by range or list separators.
    for i in range(len(nums) - 2, -1, -1):
        if units[i] is None and units[i + 1] and RANGE_SEP.fullmatch(text[nums[i].end():nums[i + 1].start()]):
            units[i] = units[i + 1]
    out = []
    for m, unit in zip(nums, units):
        separated = re.search(SEP, m.group("int")) is not None
        if not (m.group("frac") or unit or separated):
            continue
        out.append(Figure(m.group(0).strip(), number_value(m), len(m.group("frac") or ".") - 1, unit or None,
                          m.group("sign"), bool(APPROX.search(text[:m.start()])), m.start()))
    return out


# ---- the numbers in a source file --------------------------------------------------------

FILE_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:" + SEP + r"\d{3})+(?:\.\d+)?(?![\d])|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
TEXT_SKIP = (".gz", ".svg", ".png", ".jpg", ".zst", ".xz")
_values = {}


def file_values(path):
    """Every number in a text file (separators removed, and each group alone too), sorted."""
    if path not in _values:
        vals = []
        if not path.endswith(TEXT_SKIP):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            if b"\0" not in data[:8192]:
                text = data.decode("utf-8", "replace")
                for m in FILE_NUMBER.finditer(text):
                    s = re.sub(SEP, "", m.group(0))
                    try:
                        vals.append(float(s))
                    except ValueError:
                        pass
                vals += [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text) if len(x) < 30]
        _values[path] = sorted(set(vals))
    return _values[path]


def source_files(path):
    if os.path.isdir(path):
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    return [path] if os.path.exists(path) else []


def find(fig, files):
    """The first file holding a number that rounds to the figure, or None."""
    for path in files:
        vals = file_values(path)
        for v, t in fig.candidates():
            i = bisect.bisect_left(vals, v - t)
            if i < len(vals) and vals[i] <= v + t:
                return path
    return None


def computed(fig, others):
    """True for a figure that is computed rather than read: an "x"/"×" ratio not found in a
    file is taken as computed; a percentage must be a ratio or relative difference of two other
    figures of the claim, and any other sign-prefixed number their difference."""
    if fig.unit in ("x", "×"):
        return True
    if fig.unit != "%" and not fig.sign:
        return False
    t = 10 ** -fig.decimals + 1e-9  # one unit of the last digit: the operands are rounded too
    target = fig.value
    vals = [o.value for o in others if o is not fig and o.value]
    for a in vals:
        for b in vals:
            if a is b:
                continue
            if fig.unit == "%":
                results = [a / b * 100, (a / b - 1) * 100, (1 - a / b) * 100]
            else:
                results = [a - b]
            if any(abs(abs(r) - target) <= t for r in results):
                return True
    return False


# ---- pages: blocks, claims ---------------------------------------------------------------

class Block:
    def __init__(self, kind, lines, exempt=False):
        self.kind, self.lines, self.exempt = kind, lines, exempt  # lines: [(number, text)]


LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
FENCE = re.compile(r"^\s*(```|~~~)")


def blocks(lines):
    """Headings, paragraphs, list items and tables of a page, fenced code left out."""
    out, cur, fence, exempt_next = [], None, None, None

    def close():
        nonlocal cur
        if cur:
            out.append(cur)
        cur = None

    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        stripped = line.strip()
        f = FENCE.match(line)
        if fence:
            if f and f.group(1) == fence:
                fence = None
            continue
        if f:
            close()
            fence = f.group(1)
            continue
        if not stripped:
            close()
            continue
        if COMMENT.fullmatch(stripped):
            close()
            m = MARKER.fullmatch(stripped)
            if m:
                exempt_next = m.group(1)
            continue
        if stripped.startswith("#"):
            close()
            out.append(Block("heading", [(number, stripped.lstrip("#").strip())], exempt_next))
            exempt_next = None
            continue
        if stripped.startswith("|"):
            if not cur or cur.kind != "table":
                close()
                cur = Block("table", [], exempt_next)
                exempt_next = None
            cur.lines.append((number, stripped))
            continue
        if LIST_ITEM.match(line) or (cur and cur.kind == "table"):
            close()
            cur = Block("item" if LIST_ITEM.match(line) else "para", [], exempt_next)
            exempt_next = None
            cur.lines.append((number, LIST_ITEM.sub("", line) if LIST_ITEM.match(line) else stripped))
            continue
        if not cur:
            cur = Block("para", [], exempt_next)
            exempt_next = None
        cur.lines.append((number, stripped))
    close()
    return out


class Claim:
    def __init__(self, page, text, line_of, sources, exempt):
        self.page, self.text, self.line_of, self.sources, self.exempt = page, text, line_of, sources, exempt


def joined(block):
    """The block's text on one line, and a function from an offset in it to a line number."""
    text, starts = "", []
    for number, line in block.lines:
        if text:
            text += " "
        starts.append((len(text), number))
        text += line
    offsets = [s for s, _ in starts]
    return text, lambda off: starts[max(0, bisect.bisect_right(offsets, off) - 1)][1]


def marker(text):
    """The kind of the first marker in text ("not-measured" or "unverified"), or None."""
    m = MARKER.search(text)
    return m.group(1) if m else None


def claims(page, blocks_):
    """Every claim of a page, with its sources (relative link targets, as written)."""
    out = []
    caption = []  # links of the nearest block with local links in the current section
    pending = []  # headings without links: they take the links of the block under them
    for b in blocks_:
        if b.kind == "heading":
            number, text = b.lines[0]
            caption = local_links(text)
            c = Claim(page, text, lambda off, n=number: n, caption, b.exempt or marker(text))
            out.append(c)
            if not caption:
                pending.append(c)
            continue
        if b.kind == "table":
            rows = b.lines
            sep = next((i for i, (_, r) in enumerate(rows) if re.fullmatch(r"\|?[\s:|-]+\|?", r) and "-" in r), None)
            header = rows[:sep] if sep is not None else []
            header_links = [l for _, r in header for l in local_links(r)]
            for c in pending:
                c.sources = header_links
            pending = []
            # Header cells name columns; they are not claims.
            for number, row in rows[(sep + 1) if sep is not None else 0:]:
                own = local_links(row)
                out.append(Claim(page, row, lambda off, n=number: n, own or caption + header_links,
                                 b.exempt or marker(row)))
            continue
        text, line_of = joined(b)
        block_links = local_links(text)
        for c in pending:
            c.sources = block_links
        pending = []
        if block_links:
            caption = block_links
        whole = b.exempt or (marker(text) if MARKER.match(text) else None)
        start = 0
        for end in [m.end() for m in SENTENCE_END.finditer(text)] + [len(text)]:
            sentence = text[start:end]
            own = local_links(sentence)
            out.append(Claim(page, " " * start + sentence, line_of, own or block_links,
                             whole or marker(sentence)))
            start = end
    return out


# ---- the checks --------------------------------------------------------------------------

def pages(root, patterns):
    seen = []
    for pattern in patterns:
        for p in sorted(glob.glob(os.path.join(root, pattern))):
            if p not in seen:
                seen.append(p)
    return seen


def check_links(root):
    problems = []
    for page in pages(root, LINK_PAGES):
        base = os.path.dirname(page)
        with open(page, encoding="utf-8") as f:
            lines = f.readlines()
        fence = None
        for number, line in enumerate(lines, 1):
            fm = FENCE.match(line)
            if fence:
                fence = None if fm and fm.group(1) == fence else fence
                continue
            if fm:
                fence = fm.group(1)
                continue
            for target in local_links(line):
                if not os.path.exists(os.path.join(base, target)):
                    problems.append(f"{os.path.relpath(page, root)}:{number}: no such file: {target}")
    return problems


def check_figures(root, verbose=False):
    problems, warnings = [], []
    stats = {"claims": 0, "figures": 0, "found": 0, "computed": 0, "exempt": 0, "unverified": 0}
    for page in pages(root, CLAIM_PAGES):
        rel = os.path.relpath(page, root)
        base = os.path.dirname(page)
        with open(page, encoding="utf-8") as f:
            bl = blocks(f.readlines())
        for c in claims(rel, bl):
            figs = figures(clean(c.text))
            if not figs:
                continue
            stats["claims"] += 1
            stats["figures"] += len(figs)
            if c.exempt == "unverified":
                # Kept visible: printed on every run, but not a failure.
                stats["unverified"] += len(figs)
                for fig in figs:
                    warnings.append(f"{rel}:{c.line_of(fig.start)}: unverified figure "
                                    f"\"{fig.text}{fig.unit or ''}\" (marked <!-- unverified -->)")
                continue
            if c.exempt:
                stats["exempt"] += len(figs)
                continue
            files = [f for s in dict.fromkeys(c.sources) for f in source_files(os.path.normpath(os.path.join(base, s)))]
            for fig in figs:
                where = f"{rel}:{c.line_of(fig.start)}"
                if not c.sources:
                    problems.append(f"{where}: unlinked figure \"{fig.text}{fig.unit or ''}\"")
                    continue
                hit = find(fig, files)
                if hit:
                    stats["found"] += 1
                    if verbose:
                        print(f"{where}: \"{fig.text}\" found in {os.path.relpath(hit, root)}")
                elif computed(fig, figs):
                    stats["computed"] += 1
                    if verbose:
                        print(f"{where}: \"{fig.text}\" computed from the claim's other figures")
                else:
                    problems.append(f"{where}: figure \"{fig.text}{fig.unit or ''}\" not found in "
                                    + ", ".join(dict.fromkeys(c.sources)))
    return problems, warnings, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    root = os.path.normpath(a.root)
    problems = check_links(root)
    fig_problems, warnings, s = check_figures(root, a.verbose)
    problems += fig_problems
    for w in warnings:
        print(f"check-claims: warning: {w}")
    for p in problems:
        print(f"check-claims: {p}")
    print(f"check-claims: {s['claims']} claims with figures, {s['figures']} figures: {s['found']} found in their "
          f"files, {s['computed']} computed from other figures, {s['exempt']} exempt (not-measured), "
          f"{s['unverified']} marked unverified; "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
