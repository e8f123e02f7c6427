"""Read a hand-in's code before trusting its score: own work and tampering, checked outside the kernel.

A hidden test runs in the student's kernel, so whatever the student's cells did first, the test
sees: a solution that returns `flops.training_days(...)` passes the test comparing against
`flops.training_days`, and one that sets `torch.testing.assert_close = lambda *a, **k: None`
passes every test after it. These checks cannot be switched off from a hand-in because they do
not run in its kernel: the grader parses the hand-in's source (Python's `ast`) in its own process.

What is found (`Finding.kind`):
- "labkit":  the code of an exercise names labkit's own implementation of it (directly, through
             an import alias or an assigned alias, or in any function of the student's that the
             exercise's code reaches). That exercise scores 0; labkit used elsewhere is fine.
- "patch":   the code assigns, deletes or setattr()s an attribute of an imported module
             (torch.testing, numpy.testing, labkit, builtins...), or rebinds a name that the
             given cells imported (a fake `assert_close`). Every test after that cell scores 0.
- "dynamic": exec/eval/__import__/importlib/getattr with a computed name/globals()/sys.modules:
             names that cannot be read from the source. Flagged for the instructor; no score change.

The own-work rules live in the instructor source: each test cell may carry
`metadata.labkit.own_work = ["labkit.flops.training_days", ...]`, the labkit objects whose use
earns that test 0. Rules are read from the instructor's copy, never from the hand-in.
"""
import ast
from dataclasses import dataclass, field

DYNAMIC_CALLS = {"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "get_ipython"}
DYNAMIC_MODULES = ("importlib", "sys.modules", "builtins.__dict__")


@dataclass
class Finding:
    """One thing found in a hand-in's code."""
    cell: str            # where: the grade_id of the cell, or "cell N"
    kind: str            # "labkit", "patch" or "dynamic" (see the module's docstring)
    detail: str          # what, in words, with the line
    tests: list[str] = field(default_factory=list)  # grade_ids of the test cells that score 0 for it

    def __str__(self) -> str:
        return f"{self.cell}: {self.detail}" + (f" -> 0 for {', '.join(self.tests)}" if self.tests else "")


def own_work_rules(source_nb) -> dict[str, set[str]]:
    """{test grade_id: dotted names of labkit objects its exercise must not use}, from the
    instructor source's cell metadata (labkit.own_work)."""
    rules = {}
    for cell in source_nb.cells:
        names = cell.metadata.get("labkit", {}).get("own_work")
        if names:
            rules[cell.metadata["nbgrader"]["grade_id"]] = set(names)
    return rules


def _cell_id(cell, i: int) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i}"


def _parse(source: str):
    """The cell's AST; IPython magics and shell lines (%, !) are blanked first."""
    lines = [("" if ln.lstrip().startswith(("%", "!")) else ln) for ln in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


class _Names:
    """Which dotted module path each local name stands for, from imports and plain aliases."""

    def __init__(self):
        self.alias: dict[str, str] = {}

    def dotted(self, node) -> str | None:
        """`F.training_days` -> "labkit.flops.training_days" when F is labkit.flops; else None."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.alias:
            return None
        return ".".join([self.alias[node.id]] + parts[::-1])

    def learn(self, tree) -> set[str]:
        """Record the aliases a cell binds at its top level; return the names it imports."""
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    name = a.asname or a.name.split(".")[0]
                    self.alias[name] = a.name if a.asname else a.name.split(".")[0]
                    imported.add(name)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.alias[a.asname or a.name] = f"{node.module}.{a.name}"
                    imported.add(a.asname or a.name)
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                target = self.dotted(node.value)
                if target:  # td = flops.training_days
                    self.alias[node.targets[0].id] = target
        return imported


def _bound_names(tree) -> tuple[set[str], set[str]]:
    """Names a cell (re)binds at any level: (by def, class, assignment, for/with; by import)."""
    binds, imports = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            binds.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            binds.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports |= {a.asname or a.name.split(".")[0] for a in node.names}
    return binds, imports


def _test_names(source_nb) -> set[str]:
    """Every name the instructor's test cells (hidden tests included) read."""
    out = set()
    for cell in source_nb.cells:
        g = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and g.get("grade") and not g.get("solution"):
            tree = _parse(cell.source)
            out |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} if tree else set()
    return out


def audit(handin_nb, source_nb) -> list[Finding]:
    """Everything found in the code of `handin_nb` that the instructor source `source_nb` does
    not contain itself (the given cells are the instructor's; test cells are restored by nbgrader).

    Own work is judged per exercise: the code of the exercise (the student's cells before its
    test cell, back to the previous test cell) and every function or class of the student's
    that this code reaches, in any cell. Using labkit elsewhere (timing `kernels.add` in a
    "try it" cell, a scratch cell) costs nothing. Patches count wherever they are.
    Both are nbformat notebooks. Returns the findings (empty when clean).
    """
    rules = own_work_rules(source_nb)
    given = {c.source.strip() for c in source_nb.cells if c.cell_type == "code"
             and not c.metadata.get("nbgrader", {}).get("solution")}
    tests = [c.metadata["nbgrader"]["grade_id"] for c in handin_nb.cells
             if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")]
    names, protected, findings = _Names(), set(), []
    used_by_tests = _test_names(source_nb)
    student = []  # (where, tree, the test cell that follows it)
    seen_tests = 0
    for i, cell in enumerate(handin_nb.cells):
        if cell.cell_type != "code":
            continue
        g = cell.metadata.get("nbgrader", {})
        tree = _parse(cell.source)
        if tree is None:
            continue
        is_test = g.get("grade") and not g.get("solution")
        if is_test or cell.source.strip() in given:  # the instructor's code: learn its names only
            protected |= names.learn(tree) & used_by_tests
            seen_tests += bool(is_test)
            continue
        where, later = _cell_id(cell, i), tests[seen_tests:]
        student.append((where, tree, later[0] if later else None))
        findings += _check_cell(tree, where, names, protected, later)
        names.learn(tree)
    for test, forbidden in rules.items():
        findings += _own_work(test, forbidden, student, names)
    unique = {(f.cell, f.kind, f.detail, tuple(f.tests)): f for f in findings}  # ast.walk may meet a name twice
    return list(unique.values())


def _own_work(test: str, forbidden: set[str], student: list, names: _Names) -> list[Finding]:
    """Findings of labkit's implementation in the code of the exercise tested by `test`."""
    defs = {}  # the student's functions and classes, by name: (cell, node)
    for where, tree, _ in student:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs[node.name] = (where, node)
    todo = [(where, tree) for where, tree, nxt in student if nxt == test]
    reached, out = set(), []
    while todo:
        where, tree = todo.pop()
        for node in ast.walk(tree):
            paths = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                paths = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, (ast.Attribute, ast.Name)) and isinstance(node.ctx, ast.Load):
                paths = [names.dotted(node) or ""]
                if isinstance(node, ast.Name) and node.id in defs and node.id not in reached:
                    reached.add(node.id)
                    todo.append(defs[node.id])
            for path in paths:
                if any(path == f or path.startswith(f + ".") for f in forbidden):
                    out.append(Finding(where, "labkit", f"line {node.lineno}: uses {path}, labkit's own "
                                       f"implementation of the exercise tested by {test}", [test]))
    return out


def _check_cell(tree, where: str, names: _Names, protected: set[str], later: list[str]) -> list[Finding]:
    """Patches and dynamic names in one of the student's cells."""
    out = []
    # names first learned in this cell count too (an import at the top of a solution cell)
    local = _Names()
    local.alias = dict(names.alias)
    local.learn(tree)
    for node in ast.walk(tree):
        # patches: module.attr = ..., del module.attr, setattr(module, ...)
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and local.dotted(t.value):
                out.append(Finding(where, "patch", f"line {node.lineno}: replaces {local.dotted(t)}", list(later)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fn = node.func.id
            if fn in ("setattr", "delattr") and node.args and local.dotted(node.args[0]):
                out.append(Finding(where, "patch", f"line {node.lineno}: {fn}() on {local.dotted(node.args[0])}",
                                   list(later)))
            elif fn in DYNAMIC_CALLS or (fn == "getattr" and len(node.args) > 1
                                         and not isinstance(node.args[1], ast.Constant)):
                out.append(Finding(where, "dynamic", f"line {node.lineno}: {fn}(): names the grader cannot read"))
        if isinstance(node, (ast.Attribute, ast.Name)):
            path = local.dotted(node)
            if path and path.startswith(DYNAMIC_MODULES):
                out.append(Finding(where, "dynamic", f"line {node.lineno}: uses {path}"))
    binds, imports = _bound_names(tree)
    changed = {n for n in imports if local.alias.get(n) != names.alias.get(n)}  # `import torch` again is fine
    for name in sorted((binds | changed) & protected):
        out.append(Finding(where, "patch", f"rebinds {name!r}, which the given cells imported", list(later)))
    return out


# --- Near-duplicates: copied code, for the instructor to look at (never a score change) ----------

@dataclass
class Match:
    """Two pieces of code for one exercise that share most of their fingerprints."""
    exercise: str        # grade_id of the solution cell
    a: str               # a student
    b: str               # another student, or "labkit:<dotted name>" (the kit's implementation)
    similarity: float    # 0..1: shared fingerprints over those of the smaller piece

    def __str__(self) -> str:
        return f"{self.exercise}: {self.a} ~ {self.b} ({self.similarity:.0%} of fingerprints shared)"


def fingerprints(code: str, k: int = 5) -> set[int]:
    """Hashes of every run of k tokens of `code`, with what copying usually changes taken out:
    comments, blank lines and layout are dropped, local names and numbers become one symbol N, string
    literals one symbol S (attribute names such as `.topk` and keywords are kept: they carry
    the algorithm). Renaming variables or rewording comments leaves the fingerprints as they were."""
    import io
    import keyword
    import tokenize
    toks, prev = [], ""
    try:
        for t in tokenize.generate_tokens(io.StringIO(code).readline):
            if t.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                          tokenize.DEDENT, tokenize.ENDMARKER):
                continue
            if (t.type == tokenize.NAME and not keyword.iskeyword(t.string) and prev != ".") or t.type == tokenize.NUMBER:
                toks.append("N")
            elif t.type == tokenize.STRING or t.type in getattr(tokenize, "FSTRING_TYPES", ()):
                toks.append("S")
            else:
                toks.append(t.string)
            prev = t.string
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # unfinished code: the tokens read so far
    return {hash(tuple(toks[i:i + k])) for i in range(len(toks) - k + 1)}


def similar(handins: dict, source_nb, threshold: float = 0.8, min_grams: int = 25) -> list[Match]:
    """Exercises whose code is near-identical between two hand-ins, or to labkit's own
    implementation of that exercise (the labkit objects named in its test cell's own-work rule).

    handins: {student: nbformat notebook}. Per exercise (solution cell), the code's fingerprints
    minus those of the given stub; pieces with fewer than `min_grams` left are skipped, since
    short answers (a formula) are alike when written independently. similarity = shared
    fingerprints / those of the smaller piece; matches at `threshold` or above are returned,
    most similar first. This points the instructor at pairs to read; it changes no score.
    """
    import importlib
    import inspect
    stubs, rule_of, test = {}, {}, None
    rules = own_work_rules(source_nb)
    for cell in reversed(source_nb.cells):  # each solution cell's rule: the next test cell's
        g = cell.metadata.get("nbgrader", {})
        if g.get("grade") and not g.get("solution"):
            test = g.get("grade_id")
        elif g.get("solution") and cell.cell_type == "code":
            rule_of[g["grade_id"]] = rules.get(test, set())
            stub = cell.source.split("### BEGIN SOLUTION")[0] + cell.source.split("### END SOLUTION")[-1]
            stubs[g["grade_id"]] = fingerprints(stub)
    pieces = {}  # exercise -> {who: fingerprints}
    for student, nb in handins.items():
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in stubs:
                fp = fingerprints(cell.source) - stubs[gid]
                if len(fp) >= min_grams:
                    pieces.setdefault(gid, {})[student] = fp
    for gid, names in rule_of.items():
        for name in sorted(names):
            module, _, attr = name.rpartition(".")
            try:
                obj = getattr(importlib.import_module(module), attr)
                fp = fingerprints(inspect.getsource(obj))
            except (ImportError, AttributeError, TypeError, OSError):
                continue
            if gid in pieces and len(fp) >= min_grams:
                pieces[gid][f"labkit:{name}"] = fp
    out = []
    for gid, who in pieces.items():
        names = sorted(who)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if a.startswith("labkit:") and b.startswith("labkit:"):
                    continue
                sim = len(who[a] & who[b]) / min(len(who[a]), len(who[b]))
                if sim >= threshold:
                    a_, b_ = (b, a) if a.startswith("labkit:") else (a, b)
                    out.append(Match(gid, a_, b_, sim))
    return sorted(out, key=lambda m: -m.similarity)
