"""Each lab's visible tests catch the core mistake of each exercise.

For every exercise listed here, a plausible wrong solution (the ignored argument, the missing
synchronisation, the double-counted time) must fail the *visible* asserts of its test cell, the
ones a student runs before handing in, with an AssertionError (a message saying what is wrong),
while the instructor's solution passes the same asserts in the same namespace. Hidden tests are
not run here: nbval runs them on the instructor source, and test_grading on hand-ins.

The namespace is the lab's own: its parameters and set-up cells (the code cells before its first
exercise) run once per lab, then each case runs a solution cell and the visible part of a test cell.
"""
import nbformat
import pytest

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WRONG = {
    "01-flops": {
        "ex1-days": [  # the GPU count ignored
            "def days_to_train(total_flop, n_gpus, peak_flop_per_s, mfu):\n"
            "    return total_flop / (peak_flop_per_s * mfu) / 86400"],
        "ex2-attention": [  # the batch ignored (the old visible tests only used batch_size=1)
            "def attention_flops(seq_len, d_model, batch_size=1, causal=False):\n"
            "    pairs = seq_len * (seq_len + 1) // 2 if causal else seq_len * seq_len\n"
            "    return 4 * pairs * d_model"],
        "ex3-gpt": [
            # the batch ignored
            "def gpt_forward_flops(n_layer, d_model, vocab_size, seq_len, batch_size=1):\n"
            "    d, T = d_model, seq_len\n"
            "    return n_layer * (2 * T * 12 * d * d + 4 * T * T * d) + 2 * T * d * vocab_size",
            # the language-model head forgotten (right for GPT-2 small? no: its head is 20 % of the FLOP)
            "def gpt_forward_flops(n_layer, d_model, vocab_size, seq_len, batch_size=1):\n"
            "    d, T, B = d_model, seq_len, batch_size\n"
            "    return n_layer * (2 * B * T * 12 * d * d + 4 * B * T * T * d)"],
        "ex4-timer": [
            # the clock read before the (pretend) GPU finished: sync only once, after the loop
            "def time_fn(fn, sync=lambda: None, warmup=3, repeats=10):\n"
            "    for _ in range(warmup):\n        fn()\n"
            "    times = []\n"
            "    for _ in range(repeats):\n"
            "        t = time.perf_counter()\n        fn()\n        times.append(time.perf_counter() - t)\n"
            "    sync()\n"
            "    q = statistics.quantiles(times, n=4, method='inclusive')\n    return q[1], q[0], q[2]",
            # no warm-up
            "def time_fn(fn, sync=lambda: None, warmup=3, repeats=10):\n"
            "    times = []\n"
            "    for _ in range(repeats):\n"
            "        t = time.perf_counter()\n        fn()\n        sync()\n        times.append(time.perf_counter() - t)\n"
            "    q = statistics.quantiles(times, n=4, method='inclusive')\n    return q[1], q[0], q[2]",
            # the mean for the median
            "def time_fn(fn, sync=lambda: None, warmup=3, repeats=10):\n"
            "    for _ in range(warmup):\n        fn()\n"
            "    sync()\n    times = []\n"
            "    for _ in range(repeats):\n"
            "        t = time.perf_counter()\n        fn()\n        sync()\n        times.append(time.perf_counter() - t)\n"
            "    return sum(times) / len(times), min(times), max(times)"],
        "ex5-intensity": [  # the output's write forgotten
            "def matmul_intensity(m, n, k, bytes_per_element):\n"
            "    return 2 * m * n * k / ((m * k + k * n) * bytes_per_element)"],
        "ex6-roofline": [  # the ridge point called memory-bound
            "def roofline(intensity, peak_flop_per_s, peak_bytes_per_s):\n"
            "    memory_roof = intensity * peak_bytes_per_s\n"
            "    return (memory_roof, 'memory') if memory_roof <= peak_flop_per_s else (peak_flop_per_s, 'compute')"],
        "ex7-shares": [  # total times added up: nested ops counted twice
            "def class_shares(rows):\n"
            "    f = dict.fromkeys(flops.CLASSES, 0.0)\n    s = dict.fromkeys(flops.CLASSES, 0.0)\n"
            "    for r in rows:\n"
            "        f[flops.op_class(r['op'])] += r['flop']\n        s[flops.op_class(r['op'])] += r['total_s']\n"
            "    return {c: (100 * f[c] / sum(f.values()), 100 * s[c] / sum(s.values())) for c in flops.CLASSES}"],
    },
}


def _grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _visible(test_cell) -> str:
    return test_cell.source.split("### BEGIN HIDDEN TESTS")[0]


class Lab:
    def __init__(self, name):
        self.nb = nbformat.read(REPO / "notebooks" / name / f"{name}.ipynb", 4)
        cells = self.nb.cells
        first = next(i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution"))
        self.namespace = {"__name__": "__lab__"}
        for cell in cells[:first]:
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{name} set-up", "exec"), self.namespace)

    def solution(self, grade_id):
        return next(c for c in self.nb.cells if _grade_id(c) == grade_id)

    def test_after(self, grade_id):
        cells = self.nb.cells
        at = cells.index(self.solution(grade_id))
        return next(c for c in cells[at + 1:] if c.metadata.get("nbgrader", {}).get("grade"))

    def run(self, solution_source: str, grade_id: str):
        ns = dict(self.namespace)
        exec(compile(solution_source, f"{grade_id} solution", "exec"), ns)
        exec(compile(_visible(self.test_after(grade_id)), f"{grade_id} visible tests", "exec"), ns)


@pytest.fixture(scope="module")
def labs():
    return {}


def _lab(labs, name) -> Lab:
    if name not in labs:
        labs[name] = Lab(name)
    return labs[name]


CASES = [(lab, gid, i) for lab, exercises in WRONG.items() for gid, wrongs in exercises.items()
         for i in range(len(wrongs))]


@pytest.mark.parametrize("lab, grade_id", sorted({(lab, gid) for lab, gid, _ in CASES}))
def test_instructor_solution_passes_the_visible_tests(labs, lab, grade_id):
    lab_ = _lab(labs, lab)
    source = lab_.solution(grade_id).source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "")
    lab_.run(source, grade_id)


@pytest.mark.parametrize("lab, grade_id, i", CASES, ids=[f"{lab}:{gid}:{i}" for lab, gid, i in CASES])
def test_plausible_wrong_solution_fails_a_visible_test(labs, lab, grade_id, i):
    with pytest.raises(AssertionError) as err:
        _lab(labs, lab).run(WRONG[lab][grade_id][i], grade_id)
    assert str(err.value), "a failing visible assert must say what is wrong"


@pytest.mark.parametrize("lab", sorted(WRONG))
def test_every_exercise_of_a_deepened_lab_has_a_wrong_solution_here(lab):
    nb = nbformat.read(REPO / "notebooks" / lab / f"{lab}.ipynb", 4)
    code_exercises = {_grade_id(c) for c in nb.cells if c.cell_type == "code"
                      and c.metadata.get("nbgrader", {}).get("solution")
                      and c.metadata["nbgrader"]["grade_id"].startswith("ex")}
    assert code_exercises == set(WRONG[lab]), code_exercises ^ set(WRONG[lab])
