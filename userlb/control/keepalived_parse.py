"""keepalived.conf's syntax, as keepalived 2.2 reads it: files -> a tree of
statements, each carrying its file and line (no meaning attached here; the
keywords are interpreted in keepalived.py).

The syntax:

* a statement is a keyword and its words on one line; a statement may open a
  block with `{` (on the same line or on the next one) that ends with `}`;
  blocks nest, and `{ ... }` may also sit on one line;
* `#` and `!` start a comment (outside double quotes) that runs to the end
  of the line;
* double quotes group words (`misc_path "/usr/bin/check -p 80"`); the quotes
  are removed;
* `include PATTERN` (anywhere, at any depth) reads the files the shell glob
  PATTERN names (sorted; `{a,b}` braces expanded), a relative pattern being
  taken from the directory of the file that includes it; a pattern that
  matches nothing, an unreadable file or an include loop is an error;
* keepalived's parameter substitution (`$NAME=...`, `$NAME`), conditional
  lines (`@name ...`) and sequences (`~SEQ(...)`) are refused with a clear
  message: userlb does not expand them.

Every error is a KeepalivedError naming the file and the line.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ConfigError

#: include depth (keepalived's own limit is of this order)
MAX_INCLUDE_DEPTH = 16
#: a file larger than this is refused (a keepalived.conf is a few KB)
MAX_FILE_BYTES = 16 * 1024 * 1024


class KeepalivedError(ConfigError):
    """A keepalived.conf refused: `file` and `line` name the place."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message, line=line)
        self.file = file

    def __str__(self) -> str:
        where = self.file or "<keepalived.conf>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.message}"


@dataclass
class Stmt:
    """One statement: `words[0]` is the keyword; `block` is None when the
    statement opens no block."""
    words: list[str]
    file: str
    line: int
    block: list[Stmt] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> list[str]:
        return self.words[1:]

    def error(self, message: str) -> KeepalivedError:
        return KeepalivedError(message, self.file, self.line)


@dataclass
class _Tok:
    text: str
    quoted: bool
    file: str
    line: int


@dataclass
class _Source:
    """The token stream of one configuration (includes expanded); None marks
    the end of a line."""
    toks: list[_Tok | None] = field(default_factory=list)


_BRACES = re.compile(r"\{(,|[^{}]*,[^{}]*)\}")


def _expand_braces(pattern: str) -> list[str]:
    """The shell's `{a,b}` expansion (glob.glob has none; keepalived's
    glob() call asks for GLOB_BRACE)."""
    m = _BRACES.search(pattern)
    if m is None:
        return [pattern]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out.extend(_expand_braces(pattern[:m.start()] + alt + pattern[m.end():]))
    return out


def split_words(text: str, file: str, line: int) -> list[_Tok]:
    """One line -> tokens: comments removed, quotes grouped, braces apart."""
    out: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\f\v":
            i += 1
            continue
        if c in "#!":
            break
        if c in "{}":
            out.append(_Tok(c, False, file, line))
            i += 1
            continue
        if c == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise KeepalivedError("unterminated quoted string", file, line)
            out.append(_Tok(text[i + 1:end], True, file, line))
            i = end + 1
            continue
        j = i
        while j < n and text[j] not in " \t\r\f\v{}\"":
            j += 1
        out.append(_Tok(text[i:j], False, file, line))
        i = j
    return out


def _read_text(path: str, by: _Tok | None) -> str:
    def fail(msg: str) -> KeepalivedError:
        if by is None:
            return KeepalivedError(msg, path)
        return KeepalivedError(f"include {path}: {msg}", by.file, by.line)
    try:
        if os.path.isdir(path):
            raise fail("is a directory")
        if os.path.getsize(path) > MAX_FILE_BYTES:
            raise fail(f"larger than {MAX_FILE_BYTES} bytes")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise fail(f"cannot read: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise KeepalivedError(f"not UTF-8 text ({e.reason} at byte {e.start})",
                              path, line) from None


def _include_paths(tok: _Tok, pattern: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(tok.file))
    full = os.path.normpath(pattern if os.path.isabs(pattern) else os.path.join(base, pattern))
    found: list[str] = []
    for p in _expand_braces(full):
        if glob.has_magic(p):
            found.extend(sorted(glob.glob(p)))
        elif os.path.exists(p):
            found.append(p)
    if not found:
        raise KeepalivedError(f"include {pattern}: no file matches", tok.file, tok.line)
    return found


def _lex(path: str, src: _Source, stack: list[str], by: _Tok | None) -> None:
    real = os.path.realpath(path)
    if real in stack:
        assert by is not None
        raise KeepalivedError(f"include {path}: include loop", by.file, by.line)
    if len(stack) >= MAX_INCLUDE_DEPTH:
        assert by is not None
        raise KeepalivedError(f"include {path}: includes nested deeper than "
                              f"{MAX_INCLUDE_DEPTH}", by.file, by.line)
    text = _read_text(path, by)
    stack.append(real)
    for lineno, raw in enumerate(text.splitlines(), 1):
        toks = split_words(raw, path, lineno)
        if not toks:
            continue
        first = toks[0]
        if not first.quoted:
            _refuse_preprocessor(first)
        if first.text == "include" and not first.quoted:
            rest = re.split(r"[#!]", raw.lstrip()[len("include"):], maxsplit=1)[0].split()
            if len(rest) != 1:
                raise KeepalivedError("include needs exactly one file pattern", path, lineno)
            for inc in _include_paths(first, rest[0].strip('"')):
                _lex(inc, src, stack, first)
            continue
        for t in toks:
            if not t.quoted and t.text.startswith("$"):
                raise KeepalivedError(f"parameter substitution ({t.text}) is not expanded by "
                                      "userlb; write the value", path, lineno)
        src.toks.extend(toks)
        src.toks.append(None)
    stack.pop()


def _refuse_preprocessor(t: _Tok) -> None:
    if t.text.startswith("$"):
        raise KeepalivedError(f"parameter definitions ({t.text}) are not expanded by userlb; "
                              "write the values", t.file, t.line)
    if t.text.startswith("@"):
        raise KeepalivedError(f"conditional configuration ({t.text}) is not supported by "
                              "userlb", t.file, t.line)
    if t.text.startswith("~SEQ"):
        raise KeepalivedError("~SEQ sequences are not expanded by userlb", t.file, t.line)


def _tree(it: Iterator[_Tok | None], opener: _Tok | None) -> list[Stmt]:
    stmts: list[Stmt] = []
    words: list[_Tok] = []
    ended_line = False         # the last statement was ended by a newline

    def flush() -> None:
        nonlocal words
        if words:
            stmts.append(Stmt([w.text for w in words], words[0].file, words[0].line))
            words = []

    for tok in it:
        if tok is None:
            if words:
                flush()
                ended_line = True
            continue
        if tok.quoted or tok.text not in "{}":
            if not words:
                ended_line = False
            words.append(tok)
            continue
        if tok.text == "{":
            if words:
                flush()
            elif not (stmts and ended_line and stmts[-1].block is None):
                raise KeepalivedError("'{' without a keyword before it", tok.file, tok.line)
            stmts[-1].block = _tree(it, tok)
            ended_line = False
            continue
        # '}'
        if opener is None:
            raise KeepalivedError("'}' without a matching '{'", tok.file, tok.line)
        flush()
        return stmts
    if opener is not None:
        raise KeepalivedError("'{' is never closed (missing '}')", opener.file, opener.line)
    flush()
    return stmts


def read_config(path: str) -> list[Stmt]:
    """The statements of keepalived.conf `path` (includes read).  Raises
    KeepalivedError naming the file and line."""
    src = _Source()
    _lex(path, src, [], None)
    return _tree(iter(src.toks), None)


def parse_text(text: str, name: str = "<text>") -> list[Stmt]:
    """The statements of `text` (no includes allowed: they need a file)."""
    src = _Source()
    for lineno, raw in enumerate(text.splitlines(), 1):
        toks = split_words(raw, name, lineno)
        if not toks:
            continue
        if not toks[0].quoted:
            _refuse_preprocessor(toks[0])
            if toks[0].text == "include":
                raise KeepalivedError("include needs a configuration file", name, lineno)
        src.toks.extend(toks)
        src.toks.append(None)
    return _tree(iter(src.toks), None)
