"""Arithmetic the model cannot do in its head, parsed safely (Python's own parser, never eval):
numbers, + − × ÷, //, %, powers, parentheses, and a few functions."""

from __future__ import annotations

import ast
import math
import operator

from kame_desktop.backend.tools.base import Tool, ToolFailed, object_schema

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil}
_MAX_EXPONENT = 1000  # 10**1000 is already far beyond anything spoken
_MAX_CHARS = 200


def evaluate(expression: str) -> float | int:
    if len(expression) > _MAX_CHARS:
        raise ToolFailed(f"the expression is longer than {_MAX_CHARS} characters")
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**").replace(",", "")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ToolFailed(f"cannot read {expression!r} as arithmetic") from None
    try:
        return _value(tree.body)
    except ZeroDivisionError:
        raise ToolFailed("division by zero") from None
    except (OverflowError, ValueError) as e:
        raise ToolFailed(f"no result ({e})") from None


def _value(node: ast.AST) -> float | int:
    match node:
        case ast.Constant(value=bool()):
            raise ToolFailed("only numbers")
        case ast.Constant(value=int() | float() as number):
            return number
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            a, b = _value(left), _value(right)
            if isinstance(op, ast.Pow) and abs(b) > _MAX_EXPONENT:
                raise ToolFailed("that power is too large")
            return _BINARY[type(op)](a, b)
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_value(operand))
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in _FUNCTIONS:
            return _FUNCTIONS[name](*map(_value, args))
    raise ToolFailed("only numbers, + - * / // % ** ( ) and sqrt, abs, round, floor, ceil")


def shown(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def calculate(expression: str) -> str:
    return f"{expression} = {shown(evaluate(expression))}"


TOOLS = (
    Tool("calculate",
         "Work out arithmetic exactly: products, quotients, percentages (15% of 80 is 0.15*80), powers. "
         "Use it for any calculation.",
         object_schema(("expression",), expression={"type": "string", "description": "e.g. 347*29 or 0.15*260"}),
         calculate),
)
