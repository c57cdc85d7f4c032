"""The shape of an emitted load script, read by parsing it (never by running it)."""

from __future__ import annotations

import ast
from typing import Any

# The only top-level statements a script may have: its docstring, these imports, literal
# constants, the two functions and the __main__ guard.
IMPORTS = {"sys", "torch", "transformers"}
FROM_TRANSFORMERS = {"AutoTokenizer", "AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModelForSeq2SeqLM", "BitsAndBytesConfig"}
CONSTANTS = {"MODEL", "REVISION", "DEVICE_MAP", "MAX_MEMORY", "OFFLOAD_FOLDER", "EXEC_DEVICE", "CONTEXT", "BATCH", "NEW_TOKENS",
             "HAS_TOKENIZER"}


def script_parts(text: str) -> tuple[dict[str, Any], set[str]]:
    """Parse a script and assert its top level is the template's; return its constants (each a
    pure literal) and the text of every callee in it."""
    tree = ast.parse(text)
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= IMPORTS
        elif isinstance(node, ast.ImportFrom):
            assert node.module == "transformers" and {a.name for a in node.names} <= FROM_TRANSFORMERS
        elif isinstance(node, ast.Assign):
            (target,) = node.targets
            assert isinstance(target, ast.Name) and target.id in CONSTANTS
            constants[target.id] = ast.literal_eval(node.value)  # raises unless a pure literal
        elif isinstance(node, ast.FunctionDef):
            assert node.name in ("load_model", "load_tokenizer", "main")
        elif isinstance(node, ast.If):
            assert ast.unparse(node.test) == "__name__ == '__main__'"
        else:
            raise AssertionError(f"unexpected statement: {ast.unparse(node)[:80]}")
    return constants, {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
