"""The subset of K/3Cloud's SQL-like ``FilterString`` the emulator understands.

A real tokenizer and recursive-descent parser (never ``eval``): a quote inside a properly escaped
string literal stays data, so ``FTHIRDBILLNO='x'' OR 1=1'`` compares against the text ``x' OR 1=1``.

Grammar (keywords case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | predicate
    predicate  := "(" expr ")"
                | operand ("=" | "<>" | "!=" | ">" | "<" | ">=" | "<=") operand
                | operand ["NOT"] "IN" "(" operand ("," operand)* ")"
                | operand ["NOT"] "LIKE" operand
                | operand "IS" ["NOT"] "NULL"
    operand    := field | 'string' | N'string' | number | "-" number | "NULL"
    field      := identifier ("." identifier)*        e.g. FBillNo, FCONTACTUNIT.FNumber

Evaluation follows SQL: three-valued logic (a comparison with NULL is unknown), string comparison
case-insensitive like the Chinese_PRC_CI_AS collation K/3Cloud databases use, and a literal compared
with a number or a date is converted to that type (a failed conversion is an error, as in SQL Server).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from dk_emulators.kingdee.collation import collation_key


class FilterError(ValueError):
    """The filter cannot be parsed or evaluated; ``position`` is the character offset when known."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} (at position {position})")
        self.position = position


# ---------------------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class Token:
    kind: str  # IDENT, STRING, NUMBER, OP, LPAREN, RPAREN, COMMA, KEYWORD, END
    text: str
    position: int
    value: Any = None


KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL"}
_TWO_CHAR_OPS = {"<>", "!=", ">=", "<="}
_ONE_CHAR_OPS = {"=", ">", "<", "-"}


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; string literals are decoded ('' → ')."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        start = i
        if ch in "Nn" and i + 1 < n and text[i + 1] == "'":
            i += 1  # N'...' (unicode literal) is the same as '...'
            ch = "'"
        if ch == "'":
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise FilterError("unterminated string literal", start)
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        chars.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            tokens.append(Token("STRING", text[start:i], start, "".join(chars)))
        elif ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            while i < n and (text[i].isdigit() or text[i] == "."):
                i += 1
            literal = text[start:i]
            try:
                number = Decimal(literal)
            except InvalidOperation:
                raise FilterError(f"bad number {literal!r}", start) from None
            if i < n and (text[i].isalpha() or text[i] == "_"):
                raise FilterError(f"bad number {text[start:i + 1]!r}", start)
            tokens.append(Token("NUMBER", literal, start, number))
        elif ch.isalpha() or ch == "_":
            while i < n and (text[i].isalnum() or text[i] in "_."):
                i += 1
            word = text[start:i]
            if word.endswith(".") or ".." in word:
                raise FilterError(f"bad field name {word!r}", start)
            if word.upper() in KEYWORDS:
                tokens.append(Token("KEYWORD", word, start, word.upper()))
            else:
                tokens.append(Token("IDENT", word, start, word))
        elif text[i:i + 2] in _TWO_CHAR_OPS:
            tokens.append(Token("OP", text[i:i + 2], start, text[i:i + 2]))
            i += 2
        elif ch in _ONE_CHAR_OPS:
            tokens.append(Token("OP", ch, start, ch))
            i += 1
        elif ch == "(":
            tokens.append(Token("LPAREN", ch, start))
            i += 1
        elif ch == ")":
            tokens.append(Token("RPAREN", ch, start))
            i += 1
        elif ch == ",":
            tokens.append(Token("COMMA", ch, start))
            i += 1
        else:
            raise FilterError(f"unexpected character {ch!r}", start)
    tokens.append(Token("END", "", n))
    return tokens


# ------------------------------------------------------------------------------------------- AST

@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any  # str, Decimal or None


Operand = Field | Literal


@dataclass(frozen=True)
class Compare:
    left: Operand
    op: str
    right: Operand


@dataclass(frozen=True)
class InList:
    operand: Operand
    items: tuple[Operand, ...]
    negated: bool = False


@dataclass(frozen=True)
class Like:
    operand: Operand
    pattern: Operand
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    operand: Operand
    negated: bool = False


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Compare | InList | Like | IsNull | And | Or | Not


# ---------------------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def is_keyword(self, word: str, offset: int = 0) -> bool:
        token = self.tokens[min(self.pos + offset, len(self.tokens) - 1)]
        return token.kind == "KEYWORD" and token.value == word

    def expect(self, kind: str, what: str) -> Token:
        if self.current.kind != kind:
            raise FilterError(f"expected {what}, found {self.current.text or 'end of filter'!r}",
                              self.current.position)
        return self.advance()

    def parse(self) -> Node:
        node = self.or_expr()
        if self.current.kind != "END":
            raise FilterError(f"unexpected {self.current.text!r}", self.current.position)
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.is_keyword("OR"):
            self.advance()
            node = Or(node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.is_keyword("AND"):
            self.advance()
            node = And(node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        if self.is_keyword("NOT"):
            self.advance()
            return Not(self.not_expr())
        return self.predicate()

    def predicate(self) -> Node:
        if self.current.kind == "LPAREN":
            self.advance()
            node = self.or_expr()
            self.expect("RPAREN", "')'")
            return node
        left = self.operand()
        token = self.current
        if token.kind == "OP" and token.value != "-":
            self.advance()
            op = "<>" if token.value == "!=" else token.value
            return Compare(left, op, self.operand())
        negated = False
        if self.is_keyword("NOT") and (self.is_keyword("IN", 1) or self.is_keyword("LIKE", 1)):
            self.advance()
            negated = True
        if self.is_keyword("IN"):
            self.advance()
            self.expect("LPAREN", "'(' after IN")
            items = [self.operand()]
            while self.current.kind == "COMMA":
                self.advance()
                items.append(self.operand())
            self.expect("RPAREN", "')' closing the IN list")
            return InList(left, tuple(items), negated)
        if self.is_keyword("LIKE"):
            self.advance()
            return Like(left, self.operand(), negated)
        if self.is_keyword("IS"):
            self.advance()
            is_not = False
            if self.is_keyword("NOT"):
                self.advance()
                is_not = True
            if not self.is_keyword("NULL"):
                raise FilterError("expected NULL after IS", self.current.position)
            self.advance()
            return IsNull(left, is_not)
        raise FilterError(f"expected a comparison, found {token.text or 'end of filter'!r}", token.position)

    def operand(self) -> Operand:
        token = self.current
        if token.kind == "IDENT":
            self.advance()
            return Field(token.value)
        if token.kind == "STRING":
            self.advance()
            return Literal(token.value)
        if token.kind == "NUMBER":
            self.advance()
            return Literal(token.value)
        if token.kind == "OP" and token.value == "-" and self.tokens[self.pos + 1].kind == "NUMBER":
            self.advance()
            return Literal(-self.advance().value)
        if self.is_keyword("NULL"):
            self.advance()
            return Literal(None)
        raise FilterError(f"expected a field or a value, found {token.text or 'end of filter'!r}",
                          token.position)


def parse_filter(text: str | None) -> Node | None:
    """Parse a FilterString; an empty or blank filter is ``None`` (matches every row)."""
    if text is None or not str(text).strip():
        return None
    return _Parser(tokenize(str(text))).parse()


def referenced_fields(node: Node | Operand | None) -> set[str]:
    """Every field name the filter mentions, as written."""
    if node is None or isinstance(node, Literal):
        return set()
    if isinstance(node, Field):
        return {node.name}
    if isinstance(node, Compare):
        return referenced_fields(node.left) | referenced_fields(node.right)
    if isinstance(node, InList):
        found = referenced_fields(node.operand)
        for item in node.items:
            found |= referenced_fields(item)
        return found
    if isinstance(node, Like):
        return referenced_fields(node.operand) | referenced_fields(node.pattern)
    if isinstance(node, IsNull):
        return referenced_fields(node.operand)
    if isinstance(node, And | Or):
        return referenced_fields(node.left) | referenced_fields(node.right)
    return referenced_fields(node.operand)


# ------------------------------------------------------------------------------------ evaluation

Resolver = Callable[[str], Any]

_DATE_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f",
                 "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d", "%Y/%m/%d", "%Y/%m/%d %H:%M:%S")


def parse_datetime(text: str) -> datetime:
    """Parse the date and date-time spellings K/3Cloud accepts; ``ValueError`` otherwise."""
    value = text.strip()
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise ValueError(f"not a date: {text!r}")


def _value(operand: Operand, resolve: Resolver) -> Any:
    value = resolve(operand.name) if isinstance(operand, Field) else operand.value
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def _coerce_pair(left: Any, right: Any) -> tuple[Any, Any]:
    """Bring two non-NULL values to one comparable type, the way SQL Server converts literals."""
    if isinstance(left, Decimal) and isinstance(right, str):
        return left, _to_decimal(right)
    if isinstance(left, str) and isinstance(right, Decimal):
        return _to_decimal(left), right
    if isinstance(left, datetime) and isinstance(right, str):
        return left, _to_datetime(right)
    if isinstance(left, str) and isinstance(right, datetime):
        return _to_datetime(left), right
    if isinstance(left, str) and isinstance(right, str):
        return collation_key(left), collation_key(right)
    if type(left) is not type(right):
        raise FilterError(f"cannot compare {left!r} with {right!r}")
    return left, right


def _to_decimal(text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise FilterError(f"conversion failed when converting {text!r} to a number") from None


def _to_datetime(text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError:
        raise FilterError(f"conversion failed when converting {text!r} to a date") from None


def _compare(left: Any, op: str, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    a, b = _coerce_pair(left, right)
    if op == "=":
        return a == b
    if op == "<>":
        return a != b
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    if op == ">=":
        return a >= b
    return a <= b


def like_to_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE: ``%`` any run, ``_`` one character, ``[...]`` left literal; case-insensitive."""
    parts = []
    for ch in pattern:
        if ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _truth(node: Node, resolve: Resolver) -> bool | None:
    if isinstance(node, And):
        left = _truth(node.left, resolve)
        if left is False:
            return False
        right = _truth(node.right, resolve)
        if right is False:
            return False
        return None if left is None or right is None else True
    if isinstance(node, Or):
        left = _truth(node.left, resolve)
        if left is True:
            return True
        right = _truth(node.right, resolve)
        if right is True:
            return True
        return None if left is None or right is None else False
    if isinstance(node, Not):
        inner = _truth(node.operand, resolve)
        return None if inner is None else not inner
    if isinstance(node, Compare):
        return _compare(_value(node.left, resolve), node.op, _value(node.right, resolve))
    if isinstance(node, InList):
        value = _value(node.operand, resolve)
        if value is None:
            return None
        saw_null = False
        for item in node.items:
            outcome = _compare(value, "=", _value(item, resolve))
            if outcome:
                return not node.negated
            saw_null = saw_null or outcome is None
        return None if saw_null else node.negated
    if isinstance(node, Like):
        value = _value(node.operand, resolve)
        pattern = _value(node.pattern, resolve)
        if value is None or pattern is None:
            return None
        if isinstance(value, datetime):
            value = value.strftime("%Y-%m-%d %H:%M:%S")
        matched = like_to_regex(str(pattern)).fullmatch(str(value)) is not None
        return matched != node.negated
    if isinstance(node, IsNull):
        value = _value(node.operand, resolve)
        return (value is None) != node.negated
    raise FilterError(f"unknown filter node {node!r}")


def evaluate(node: Node | None, resolve: Resolver) -> bool:
    """True when the row described by ``resolve`` (field name → value) passes the filter."""
    if node is None:
        return True
    return _truth(node, resolve) is True
