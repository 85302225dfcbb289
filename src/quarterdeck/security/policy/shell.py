"""Shell command lines split into simple commands, pipelines and substitutions.

Words are split by the rules of ``shlex`` (POSIX mode, shell punctuation), but ``shlex`` knows
nothing of command substitution, heredocs, comments or newlines, and cannot tell an operator
from a quoted one (``grep "|" f``). So a small pre-pass walks the line once, tracking quote
state, and:

* cuts out ``$(...)``, backticks, ``<(...)`` and ``>(...)`` into :class:`Sub` bodies (parsed
  recursively by the caller), leaving a placeholder word;
* cuts out heredoc bodies, turning ``<<EOF`` into a here-string of a placeholder;
* drops comments, turns unquoted newlines into ``;``;
* masks operator characters that are quoted or escaped, so the tokeniser only ever sees real
  operators as punctuation.

The tokeniser itself is :func:`fast_tokens`, a regex implementation of exactly the ``shlex``
grammar (:func:`shlex_tokens` stays the reference, and the fallback): ``shlex`` reads one
character at a time and alone cost more than the gate's whole latency budget.

The result is a flat list of :class:`SimpleCommand` in source order, each knowing its pipeline.
Unbalanced quotes are closed rather than rejected (``lenient``): a hostile line must still be
judged, never skipped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

OPCHARS = "();<>|&"
_MASK = {c: chr(0xE000 + i) for i, c in enumerate(OPCHARS)}
_MASK_TABLE = str.maketrans(_MASK)
_UNMASK_TABLE = str.maketrans({v: k for k, v in _MASK.items()})
_OPS = (
    "&>>",
    "<<<",
    ">>",
    "&&",
    "||",
    ";;",
    "|&",
    ">&",
    "<&",
    "&>",
    ">|",
    "<>",
    "<<",
    ";",
    "&",
    "|",
    "<",
    ">",
    "(",
    ")",
)
_OP_SET = frozenset(_OPS)
REDIRECTS = frozenset({"<", ">", ">>", ">|", "<>", ">&", "<&", "&>", "&>>", "<<<", "<<"})
_PIPES = frozenset({"|", "|&"})
_PLACEHOLDER = re.compile(r"__QD(SUB|HERE)(\d+)__")
_NORMAL = re.compile(r"[\\'\"$`<>#\n]")
_DQUOTE = re.compile(r"[\\\"$`();<>|&]")
_HEREDOC = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]*)'|\"([^\"\n]*)\"|([^\s;&|<>()]+))")
# One token per match: punctuation, a word, or (third group) a character no token can start
# with -- an open quote, a stray backslash -- which makes the line unbalanced. Runs of plain
# characters are taken whole and quoted strings possessively: the grammar is unambiguous, so
# this only spares ``re`` a trip through the alternation per character (and backtracking).
_TOKEN = re.compile(
    r"""[ \t\r\n]*(?:([();<>|&]+)|((?:[^\s'"\\();<>|&]++|\\.|'[^']*+'|"(?:[^"\\]++|\\.)*+")+)|([^ \t\r\n]))""",
    re.S,
)
_MASKED = re.compile("[" + "".join(_MASK.values()) + "]")
_DQ_STOP = re.compile(r'[\\"]')
_PAREN_STOP = re.compile(r"""[\\'"()]""")
_UNQUOTE = re.compile(r"""'([^']*+)'|"((?:[^"\\]++|\\.)*+)"|\\(.)""", re.S)
_DQ_ESCAPE = re.compile(r'\\([\\"])')
_LEADING_KEYWORDS = frozenset(
    {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "time", "coproc"}
)
_SKIP_COMMANDS = frozenset({"fi", "done", "esac", "}", "for", "case", "select", "function", "in"})


@dataclass(slots=True)
class Sub:
    """A substitution body: ``$``/backtick (output becomes words), ``<`` or ``>``
    (process substitution)."""

    kind: str
    body: str
    original: str = ""


@dataclass(slots=True)
class SimpleCommand:
    words: list[str] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)
    subs: list[int] = field(default_factory=list)
    stdin: str | None = None
    pipeline: int = 0


@dataclass(slots=True)
class Script:
    commands: list[SimpleCommand]
    subs: list[Sub]
    lenient: bool = False


def _skip_quoted(text: str, i: int) -> int:
    """Index just past the quoted string starting at ``text[i]`` (past the end, or the end,
    if it is not closed). Single quotes end at the next one; in double quotes a backslash
    escapes the next character. Searches jump to the next character that matters."""
    n = len(text)
    if text[i] == "'":
        end = text.find("'", i + 1)
        return n if end < 0 else end + 1
    i += 1
    while i < n:
        found = _DQ_STOP.search(text, i)
        if found is None:
            return n
        i = found.start()
        if text[i] == '"':
            return i + 1
        i += 2  # a backslash and the character it escapes
    return i


def _close_paren(text: str, i: int) -> int:
    """Index of the ``)`` closing the group whose body starts at ``i`` (len if unbalanced)."""
    depth = 1
    n = len(text)
    while i < n:
        found = _PAREN_STOP.search(text, i)
        if found is None:
            return n
        i = found.start()
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "'\"":
            i = _skip_quoted(text, i)
            continue
        if ch == "(":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return i


class _Prepass:
    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []
        self.subs: list[Sub] = []
        self.heredocs: list[str] = []
        self.pending: list[tuple[int, str, bool]] = []
        self.originals: dict[str, str] = {}

    def _sub(self, kind: str, body: str, original: str) -> None:
        token = f"__QDSUB{len(self.subs)}__"
        self.subs.append(Sub(kind, body, original))
        self.originals[token] = original
        self.out.append(token)

    def _dollar(self, i: int) -> int | None:
        """Handle ``$(`` / ``$((`` at ``i``; None if it is a plain ``$``."""
        text = self.text
        if text.startswith("$((", i):
            end = _close_paren(text, i + 2)
            self.out.append("0")
            return min(len(text), end + 2)
        if text.startswith("$(", i):
            end = _close_paren(text, i + 2)
            self._sub("$", text[i + 2 : end], text[i : end + 1])
            return end + 1
        return None

    def _backtick(self, i: int) -> int:
        end = self.text.find("`", i + 1)
        end = len(self.text) if end == -1 else end
        self._sub("$", self.text[i + 1 : end].replace("\\`", "`"), self.text[i : end + 1])
        return end + 1

    def _newline(self, i: int) -> int:
        """At an unquoted newline: consume pending heredoc bodies, emit a separator."""
        self.out.append(" ; ")
        i += 1
        for index, delimiter, strip_tabs in self.pending:
            lines: list[str] = []
            while i < len(self.text):
                end = self.text.find("\n", i)
                end = len(self.text) if end == -1 else end
                line = self.text[i:end]
                i = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
                lines.append(line)
            self.heredocs[index] = "\n".join(lines)
        self.pending.clear()
        return i

    def _double_quoted(self, i: int) -> int:
        text, out = self.text, self.out
        out.append('"')
        i += 1
        while i < len(text):
            found = _DQUOTE.search(text, i)
            if found is None:
                out.append(text[i:])
                return len(text)
            out.append(text[i : found.start()])
            i, ch = found.start(), found.group()
            if ch == '"':
                out.append('"')
                return i + 1
            if ch == "\\":
                nxt = text[i + 1 : i + 2]
                out.append(_MASK.get(nxt, "\\" + nxt))
                i += 2
            elif ch == "$":
                after = self._dollar(i)
                if after is None:
                    out.append("$")
                    i += 1
                else:
                    i = after
            elif ch == "`":
                i = self._backtick(i)
            else:
                out.append(_MASK[ch])
                i += 1
        return i

    def run(self) -> str:
        text, out = self.text, self.out
        i = 0
        while i < len(text):
            found = _NORMAL.search(text, i)
            if found is None:
                out.append(text[i:])
                break
            out.append(text[i : found.start()])
            i, ch = found.start(), found.group()
            if ch == "\\":
                nxt = text[i + 1 : i + 2]
                out.append(_MASK.get(nxt, " " if nxt == "\n" else "\\" + nxt))
                i += 2
            elif ch == "'":
                end = _skip_quoted(text, i)
                out.append(text[i:end].translate(_MASK_TABLE))
                i = end
            elif ch == '"':
                i = self._double_quoted(i)
            elif ch == "$":
                after = self._dollar(i)
                if after is None:
                    out.append("$")
                    i += 1
                else:
                    i = after
            elif ch == "`":
                i = self._backtick(i)
            elif ch in "<>" and text.startswith("(", i + 1):
                end = _close_paren(text, i + 2)
                self._sub(ch, text[i + 2 : end], text[i : end + 1])
                i = end + 1
            elif text.startswith("<<<", i):
                out.append("<<<")
                i += 3
            elif text.startswith("<<", i):
                heredoc = _HEREDOC.match(text, i)
                if heredoc is None:
                    out.append("<<")
                    i += 2
                    continue
                delimiter = next(g for g in heredoc.groups()[1:] if g is not None)
                self.pending.append((len(self.heredocs), delimiter, heredoc.group(1) == "-"))
                out.append(f" <<< __QDHERE{len(self.heredocs)}__ ")
                self.heredocs.append("")
                i = heredoc.end()
            elif ch == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
                end = text.find("\n", i)
                i = len(text) if end == -1 else end
            elif ch == "\n":
                i = self._newline(i)
            else:
                out.append(ch)
                i += 1
        return "".join(out)


def shlex_tokens(text: str) -> list[str]:
    """The reference tokeniser: ``shlex`` in POSIX mode with shell punctuation."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=OPCHARS)
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def _unquote(found: re.Match[str]) -> str:
    if found.group(1) is not None:
        return found.group(1)
    if found.group(2) is not None:
        return _DQ_ESCAPE.sub(r"\1", found.group(2))
    return found.group(3)


def fast_tokens(text: str) -> list[str] | None:
    """:func:`shlex_tokens` as one ``findall``: same tokens (a unit test holds them equal on the
    whole corpus) at a tenth of the cost, since ``shlex`` reads one character at a time.
    None when a quote is left open."""
    quoted = "'" in text or '"' in text or "\\" in text
    out: list[str] = []
    for punctuation, word, stray in _TOKEN.findall(text):
        if punctuation:
            out.append(punctuation)
        elif stray:
            return None
        else:
            out.append(_UNQUOTE.sub(_unquote, word) if quoted else word)
    return out


def _tokens(text: str) -> tuple[list[str], bool]:
    for suffix, lenient in (("", False), ("'", True), ('"', True), ("\"'", True)):
        tokens = fast_tokens(text + suffix)
        if tokens is not None:
            return tokens, lenient
    try:
        return shlex_tokens(text), True
    except ValueError:
        return text.split(), True


def _split_ops(token: str) -> list[str]:
    if token in _OP_SET:  # one operator (the usual case): no other _OPS entry is its prefix
        return [token]
    ops = []
    while token:
        op = next((o for o in _OPS if token.startswith(o)), token[0])
        ops.append(op)
        token = token[len(op) :]
    return ops


def parse(line: str) -> Script:
    """Split ``line`` into simple commands (see the module docstring)."""
    pre = _Prepass(line)
    masked = pre.run()
    tokens, lenient = _tokens(masked)
    commands: list[SimpleCommand] = []
    current = SimpleCommand()
    pipeline = 0
    pending: str | None = None

    masked_ops = _MASKED.search(masked) is not None  # else no word needs unmasking
    placeholders = "__QD" in masked
    plain = not masked_ops and not placeholders  # then restore() returns words as they are

    def restore(word: str, into: SimpleCommand) -> str:
        def one(found: re.Match[str]) -> str:
            if found.group(1) == "HERE":
                return found.group(0)
            into.subs.append(int(found.group(2)))
            return pre.originals.get(found.group(0), found.group(0))

        if masked_ops:
            word = word.translate(_UNMASK_TABLE)
        return _PLACEHOLDER.sub(one, word) if placeholders and "__QD" in word else word

    def finish(piped: bool) -> None:
        nonlocal current, pipeline
        if current.words or current.redirects or current.subs:
            current.pipeline = pipeline
            commands.append(current)
        current = SimpleCommand()
        if not piped:
            pipeline += 1

    for token in tokens:
        if token and token[0] in OPCHARS:  # words never start with a (real) operator
            for op in _split_ops(token):
                if op in REDIRECTS:
                    if current.words and current.words[-1].isdigit():
                        current.words.pop()
                    pending = op
                else:
                    finish(piped=op in _PIPES)
            continue
        if pending is not None:
            here = _PLACEHOLDER.fullmatch(token)
            if here and here.group(1) == "HERE":
                current.stdin = pre.heredocs[int(here.group(2))]
            elif pending == "<<<":
                current.stdin = restore(token, current)
            elif not (pending in (">&", "<&") and (token.isdigit() or token == "-")):
                current.redirects.append((pending, restore(token, current)))
            pending = None
            continue
        current.words.append(token if plain else restore(token, current))
    finish(piped=False)
    return Script([c for c in map(_strip_keywords, commands) if c is not None], pre.subs, lenient)


def _strip_keywords(command: SimpleCommand) -> SimpleCommand | None:
    """Drop shell grammar (``if``/``then``/``do``/``{``...) around the real command."""
    words = command.words
    while words and words[0] in _LEADING_KEYWORDS:
        words.pop(0)
    if words and words[-1] == "}":
        words.pop()
    if words and words[0] in _SKIP_COMMANDS:
        words.clear()
    if not words and not command.redirects and not command.subs:
        return None
    return command
