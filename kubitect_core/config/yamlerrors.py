"""YAML syntax errors in words, placed on the line that causes them.

Why: a YAML parser reports where it gave up, which is often lines after the mistake (an unclosed
quote swallows the lines up to the next quote; a missing ':' is noticed on the next key). Each
rule below moves the report back to the line the user has to fix, and says what to fix there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ruamel.yaml.error import MarkedYAMLError


class YamlProblem(Exception):
    """The text is not a usable YAML config; `line`/`column` (1-based) say where, when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None, path: tuple = ()):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.path = path  # where in the config, when known ("addons", "kubespray", "self")


@dataclass
class QuotedSpan:
    """A quoted scalar that ran over several lines: legal YAML, but usually a missing quote."""

    line: int  # 1-based start
    column: int
    end_line: int
    quote: str


def explain(exc: MarkedYAMLError, lines: list[str], last_quoted: QuotedSpan | None,
            open_flow: tuple[tuple[int, int], str] | None = None) -> YamlProblem:
    """The parser's error as a YamlProblem on the line to fix.

    `last_quoted`: the last quoted value that ran over several lines; `open_flow`: the innermost
    `[`/`{` not yet closed (mark and bracket) when the parser stopped.
    """
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    pm, cm = exc.problem_mark, exc.context_mark
    p_line, p_col = (pm.line + 1, pm.column + 1) if pm is not None else (None, None)
    c_line, c_col = (cm.line + 1, cm.column + 1) if cm is not None else (None, None)
    said = f" ({problem})" if problem else ""

    if last_quoted is not None and p_line is not None and last_quoted.end_line <= p_line <= last_quoted.end_line + 1:
        q = last_quoted
        return YamlProblem(f"the value quoted with {q.quote} here runs on to line {q.end_line}; a closing {q.quote} "
                           f"is probably missing on this line{said}.", q.line, q.column)
    if "quoted scalar" in context and "end of stream" in problem and c_line is not None:
        return YamlProblem(f"the quote opened here is never closed{said}.", c_line, c_col)
    if ("flow sequence" in context or "flow mapping" in context) and c_line is not None and c_line != p_line:
        bracket = "[" if "sequence" in context else "{"
        closing = "]" if bracket == "[" else "}"
        return YamlProblem(f"the '{bracket}' opened here is not closed with '{closing}' before line {p_line}"
                           f"{said}.", c_line, c_col)
    if "flow" in context and open_flow is not None and open_flow[0][0] != p_line:
        (line, col), bracket = open_flow
        closing = "]" if bracket == "[" else "}"
        return YamlProblem(f"the '{bracket}' opened here is not closed with '{closing}'{said}.", line, col)
    if "simple key" in context and c_line is not None:
        if len(lines[c_line - 1]) > 1024 if c_line <= len(lines) else False:
            return YamlProblem(f"this key is longer than the 1024 characters YAML allows for a key{said}.",
                               c_line, c_col)
        return YamlProblem(f"this key is missing its ':'{said}.", c_line, c_col)
    if "mapping values are not allowed" in problem and p_line is not None:
        prev = _previous_content_line(lines, p_line)
        if prev is not None and ":" not in _strip_comment(lines[prev - 1]) \
                and _indent(lines[prev - 1]) == _indent(lines[p_line - 1]):
            return YamlProblem(f"this line has no ':' after its key, so YAML reads it together with line "
                               f"{p_line}{said}.", prev, _indent(lines[prev - 1]) + 1)
        return YamlProblem(f"unexpected ':' here; this line is probably indented deeper than the key it "
                           f"belongs to{said}.", p_line, p_col)
    if "tab" in problem or "'\\t'" in problem:
        return YamlProblem(f"a tab is used for indentation here; YAML indents with spaces only{said}.", p_line, p_col)
    if "block collection" in context and c_line is not None and p_line is not None and p_col == c_col \
            and not lines[p_line - 1].lstrip().startswith("-"):
        return YamlProblem(f"a list item ('-') starts here, but line {p_line} continues a mapping at the same "
                           f"indentation; remove the '-' or indent the list{said}.", c_line, c_col)
    if "expected key" in problem or "<block end>" in problem or "expected '-'" in problem:
        return YamlProblem(f"the indentation of this line does not match the lines above it{said}.", p_line, p_col)
    where_from = f" {context}" if context else ""
    return YamlProblem(f"{problem or 'malformed YAML'}{where_from}.", p_line, p_col)


def _strip_comment(line: str) -> str:
    cut = line.find(" #")
    return line if cut < 0 else line[:cut]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous_content_line(lines: list[str], line: int) -> int | None:
    for n in range(line - 1, 0, -1):
        text = lines[n - 1].strip()
        if text and not text.startswith("#"):
            return n
    return None
