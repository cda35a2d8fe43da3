"""Reading the configuration an official training run recorded, without running any of its code.

The official trainers record their configuration in three forms, each read here into plain nested dicts and lists
(str keys; str, int, float, bool and None values):
- ConvSSM pickles its argparse Namespace as `<run>/args` (the YAML config merged in): `read_pickled_namespace` uses an
  unpickler that admits `argparse.Namespace` and plain built-in values only, anything else being refused by name;
- YAML files (ConvSSM's configs, GrootVL's yacs configs) and JSON dumps: `yaml.safe_load` / `json`;
- SAVi / STATM configs are Python files whose `get_config()` builds an `ml_collections.ConfigDict`:
  `read_python_config` evaluates that function with a small interpreter of the constructs such files use (literals,
  f-strings, arithmetic, comprehensions, loops, `ConfigDict(...)`, `dict.update`), which can call nothing but a few
  pure built-ins, so a config file cannot run code; whatever else it holds is refused naming the line.

`read_run_config(path)` picks the reader from the file's contents and name.
"""

import argparse
import ast
import copyreg
import json
import operator
import pickle
from pathlib import Path

from .conversion_utils import ConversionError

PLAIN_TYPES = (str, int, float, bool, type(None))


def plain(value, where: str):
    """`value` as plain nested dicts and lists (tuples become lists), refusing anything else, named by `where`."""
    if isinstance(value, PLAIN_TYPES):
        return value
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ConversionError(f"{where}: keys must be strings, got {sorted(map(repr, value))[:6]}")
        return {key: plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ConversionError(f"{where}: a {type(value).__name__} is not a plain configuration value")


class _NamespaceUnpickler(pickle.Unpickler):
    """Admits argparse.Namespace (and, for pickles of protocols 0 and 1, the generic reconstructor that creates it)
    plus the built-in values pickle encodes without naming a class; every other class or function is refused."""

    ALLOWED = {
        ("argparse", "Namespace"): argparse.Namespace,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
        ("copy_reg", "_reconstructor"): copyreg._reconstructor,  # its name in pickles of protocols 0 to 2
        ("builtins", "object"): object,
        ("__builtin__", "object"): object,
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def read_pickled_namespace(path) -> dict:
    """The values of the argparse Namespace pickled at `path` (ConvSSM's `<run>/args`)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            value = _NamespaceUnpickler(file).load()
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"{path} was refused: only an argparse.Namespace of plain values is read from a run's pickled "
            f"arguments ({error})"
        ) from error
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ConversionError(f"{path} is not a readable pickled argparse.Namespace ({error})") from error
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds a {type(value).__name__}, not the run's argparse.Namespace")
    return plain(value, path.name)


def read_yaml(path) -> dict:
    import yaml

    path = Path(path)
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConversionError(f"{path} is not a readable YAML file ({error})") from error
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds a {type(value).__name__}, not a mapping of configuration fields")
    return plain(value, path.name)


def read_json(path) -> dict:
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConversionError(f"{path} is not a readable JSON file ({error})") from error
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds a {type(value).__name__}, not a mapping of configuration fields")
    return plain(value, path.name)


def read_run_config(path) -> dict:
    """The configuration recorded at `path`: a pickled argparse Namespace, a Python config file (`get_config()`), a
    JSON or a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"the run configuration {path} is not a file")
    with open(path, "rb") as file:
        head = file.read(2)
    if head[:1] == b"\x80" or path.suffix == ".pkl":
        return read_pickled_namespace(path)
    if path.suffix == ".py":
        return read_python_config(path)
    if path.suffix == ".json":
        return read_json(path)
    return read_yaml(path)


# --- ml_collections config files ----------------------------------------------------------------------------------


class _ConfigDict(dict):
    """ml_collections.ConfigDict as the interpreter builds it: a dict whose keys are also attributes."""


def _config_dict(initial=None, **fields):
    if initial is not None and not isinstance(initial, dict):
        raise TypeError(f"ConfigDict takes a mapping, got {type(initial).__name__}")
    return _ConfigDict({**(initial or {}), **fields})


_BUILTINS = {
    name: getattr(__builtins__, name, None) if not isinstance(__builtins__, dict) else __builtins__[name]
    for name in ("range", "len", "list", "dict", "tuple", "str", "int", "float", "bool", "min", "max", "sum",
                 "sorted", "zip", "enumerate", "abs", "round", "set", "reversed", "any", "all")
}  # fmt: skip
_ML_COLLECTIONS = {"ConfigDict": _config_dict, "FrozenConfigDict": _config_dict,
                   "FieldReference": lambda value, **_: value, "placeholder": lambda *_, **__: None}  # fmt: skip
# Methods a config file may call, by the type they belong to (the others would mutate or reach outside).
_METHODS = {
    dict: {"update", "get", "items", "keys", "values", "copy", "setdefault", "pop"},
    list: {"append", "extend", "copy", "index", "count", "insert", "pop"},
    str: {"format", "join", "lower", "upper", "split", "strip", "replace", "startswith", "endswith"},
    tuple: {"index", "count"},
}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}  # fmt: skip
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}  # fmt: skip
_MAX_STEPS = 1_000_000  # statements and expressions evaluated; a config file takes a few thousand


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class _Interpreter:
    """Evaluates `get_config()` of an ml_collections config file; see the module docstring."""

    def __init__(self, path: Path):
        self.path, self.steps = path, 0

    def refuse(self, node, what: str):
        raise ConversionError(
            f"{self.path}, line {getattr(node, 'lineno', '?')}: {what}; only plain configuration code (literals, "
            "arithmetic, comprehensions, loops, ConfigDict) is evaluated"
        )

    def run(self, source: str) -> dict:
        try:
            module = ast.parse(source, filename=str(self.path))
        except SyntaxError as error:
            raise ConversionError(f"{self.path} is not a Python file ({error})") from error
        function = None
        for node in module.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # the docstring
            if isinstance(node, ast.Import) and all(alias.name == "ml_collections" for alias in node.names):
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "ml_collections":
                continue
            if isinstance(node, ast.FunctionDef) and node.name == "get_config":
                function = node
                continue
            self.refuse(node, f"a top-level {type(node).__name__} besides the docstring, `import ml_collections` and "
                        "`def get_config()`")  # fmt: skip
        if function is None:
            raise ConversionError(f"{self.path} has no get_config() function: not an ml_collections config file")
        arguments = function.args
        if arguments.args[len(arguments.args) - len(arguments.defaults):] != arguments.args or arguments.vararg:
            self.refuse(function, "get_config takes arguments without defaults")
        scope = {"ml_collections": _ML_COLLECTIONS}
        for argument, default in zip(arguments.args, arguments.defaults):
            scope[argument.arg] = self.eval(default, scope)
        try:
            self.block(function.body, scope)
        except _Return as returned:
            value = returned.value
        else:
            value = None
        if not isinstance(value, dict):
            raise ConversionError(f"{self.path}: get_config() returns a {type(value).__name__}, not a ConfigDict")
        return plain(value, "config")

    def tick(self, node):
        self.steps += 1
        if self.steps > _MAX_STEPS:
            self.refuse(node, "evaluation takes too long")

    def block(self, statements, scope):
        for statement in statements:
            self.statement(statement, scope)

    def statement(self, node, scope):
        self.tick(node)
        if isinstance(node, ast.Expr):
            self.eval(node.value, scope)
        elif isinstance(node, ast.Assign):
            value = self.eval(node.value, scope)
            for target in node.targets:
                self.assign(target, value, scope)
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINARY:
            current = self.eval(_as_load(node.target), scope)
            self.assign(node.target, _BINARY[type(node.op)](current, self.eval(node.value, scope)), scope)
        elif isinstance(node, ast.For) and not node.orelse:
            for item in self.eval(node.iter, scope):
                self.assign(node.target, item, scope)
                self.block(node.body, scope)
        elif isinstance(node, ast.If):
            self.block(node.body if self.eval(node.test, scope) else node.orelse, scope)
        elif isinstance(node, ast.Return):
            raise _Return(None if node.value is None else self.eval(node.value, scope))
        elif isinstance(node, ast.Pass):
            pass
        elif isinstance(node, ast.Import) and all(alias.name == "ml_collections" for alias in node.names):
            pass
        else:
            self.refuse(node, f"a {type(node).__name__} statement")

    def assign(self, target, value, scope):
        if isinstance(target, ast.Name):
            scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value)
            if len(values) != len(target.elts):
                self.refuse(target, f"unpacking {len(values)} values into {len(target.elts)} names")
            for element, item in zip(target.elts, values):
                self.assign(element, item, scope)
        elif isinstance(target, ast.Attribute):
            owner = self.eval(target.value, scope)
            if not isinstance(owner, _ConfigDict):
                self.refuse(target, f"setting an attribute of a {type(owner).__name__}")
            owner[target.attr] = value
        elif isinstance(target, ast.Subscript):
            owner = self.eval(target.value, scope)
            if not isinstance(owner, (dict, list)):
                self.refuse(target, f"item assignment to a {type(owner).__name__}")
            owner[self.eval(target.slice, scope)] = value
        else:
            self.refuse(target, f"assignment to a {type(target).__name__}")

    def eval(self, node, scope):
        self.tick(node)
        try:
            return self._eval(node, scope)
        except ConversionError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, AttributeError) as error:
            self.refuse(node, f"{type(error).__name__}: {error}")

    def _eval(self, node, scope):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in scope:
                return scope[node.id]
            if node.id in _BUILTINS:
                return _BUILTINS[node.id]
            self.refuse(node, f"the name {node.id!r}")
        if isinstance(node, ast.JoinedStr):
            return "".join(self.eval(part, scope) if isinstance(part, ast.Constant) else self._format(part, scope)
                           for part in node.values)  # fmt: skip
        if isinstance(node, ast.FormattedValue):
            return self._format(node, scope)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = []
            for element in node.elts:
                if isinstance(element, ast.Starred):
                    items.extend(self.eval(element.value, scope))
                else:
                    items.append(self.eval(element, scope))
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            result = {}
            for key, value in zip(node.keys, node.values):
                if key is None:
                    result.update(self.eval(value, scope))
                else:
                    result[self.eval(key, scope)] = self.eval(value, scope)
            return result
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self._comprehension(node, scope)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.eval(node.left, scope), self.eval(node.right, scope)
            if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
                self.refuse(node, "an exponent above 64")
            if isinstance(node.op, ast.Mult) and isinstance(left, (str, list, tuple)) and right > 10_000:
                self.refuse(node, "a repetition above 10000")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            value = self.eval(node.operand, scope)
            ops = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
            if type(node.op) in ops:
                return ops[type(node.op)](value)
        if isinstance(node, ast.BoolOp):
            value = None
            for operand in node.values:
                value = self.eval(operand, scope)
                if bool(value) == isinstance(node.op, ast.Or):
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self.eval(node.left, scope)
            for op, comparator in zip(node.ops, node.comparators):
                right = self.eval(comparator, scope)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body if self.eval(node.test, scope) else node.orelse, scope)
        if isinstance(node, ast.Subscript):
            return self.eval(node.value, scope)[self.eval(node.slice, scope)]
        if isinstance(node, ast.Slice):
            parts = [None if part is None else self.eval(part, scope) for part in (node.lower, node.upper, node.step)]
            return slice(*parts)
        if isinstance(node, ast.Attribute):
            owner = self.eval(node.value, scope)
            if owner is _ML_COLLECTIONS:
                if node.attr == "config_dict":
                    return _ML_COLLECTIONS
                if node.attr in _ML_COLLECTIONS:
                    return _ML_COLLECTIONS[node.attr]
                self.refuse(node, f"ml_collections.{node.attr}")
            if isinstance(owner, _ConfigDict) and node.attr in owner:
                return owner[node.attr]
            if isinstance(owner, _ConfigDict) and node.attr == "get_ref":
                return lambda name: owner[name]
            allowed = next((names for kind, names in _METHODS.items() if isinstance(owner, kind)), set())
            if node.attr in allowed:
                return getattr(owner, node.attr)
            self.refuse(node, f"the attribute {node.attr!r} of a {type(owner).__name__}")
        if isinstance(node, ast.Call):
            function = self.eval(node.func, scope)
            arguments = []
            for argument in node.args:
                if isinstance(argument, ast.Starred):
                    arguments.extend(self.eval(argument.value, scope))
                else:
                    arguments.append(self.eval(argument, scope))
            keywords = {}
            for keyword in node.keywords:
                if keyword.arg is None:
                    keywords.update(self.eval(keyword.value, scope))
                else:
                    keywords[keyword.arg] = self.eval(keyword.value, scope)
            return function(*arguments, **keywords)
        self.refuse(node, f"a {type(node).__name__} expression")

    def _format(self, node, scope):
        value = self.eval(node.value, scope)
        if node.conversion != -1:
            value = {ord("r"): repr, ord("s"): str, ord("a"): ascii}[node.conversion](value)
        spec = "" if node.format_spec is None else self.eval(node.format_spec, scope)
        return format(value, spec)

    def _comprehension(self, node, scope):
        results = []

        def loop(generators, inner):
            if not generators:
                if isinstance(node, ast.DictComp):
                    results.append((self.eval(node.key, inner), self.eval(node.value, inner)))
                else:
                    results.append(self.eval(node.elt, inner))
                return
            generator = generators[0]
            for item in self.eval(generator.iter, inner):
                local = dict(inner)
                self.assign(generator.target, item, local)
                if all(self.eval(condition, local) for condition in generator.ifs):
                    loop(generators[1:], local)

        loop(node.generators, dict(scope))
        if isinstance(node, ast.DictComp):
            return dict(results)
        return set(results) if isinstance(node, ast.SetComp) else results


def _as_load(target):
    """The expression that reads what an augmented assignment's target writes."""
    node = ast.parse(ast.unparse(target), mode="eval").body
    return ast.copy_location(node, target)


def read_python_config(path) -> dict:
    """The configuration `get_config()` of the ml_collections config file at `path` returns, as plain values."""
    path = Path(path)
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConversionError(f"{path} is not a readable Python file ({error})") from error
    return _Interpreter(path).run(source)


def lookup(config: dict, dotted: str, default=None):
    """config["a"]["b"] for "a.b"; `default` when a part is missing."""
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


__all__ = ["read_run_config", "read_pickled_namespace", "read_python_config", "read_yaml", "read_json", "plain",
           "lookup"]  # fmt: skip
