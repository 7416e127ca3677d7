"""Mutation score per module: how many of mutmut's mutants of each module the suite kills.

    python tests/benchmarks/mutation_scores.py [--work ../runs/mutation] [--tests FILE ...] [MODULE ...]

Mutates the package modules that load no TensorFlow (or the ones named, as `boxes`, `sinks`),
with the test files in TEST_FILES, in a copy of the checkout under --work (the checkout itself is
never touched), and prints killed / mutants per module and each survivor's name. `mutmut show
NAME`, run in --work's copy, prints a survivor's diff. A run picks up where the last one in the
same --work stopped. Not part of the suite: the whole package takes hours on 2 cores.

The tiny training run that many tests share is trained once here and handed to them through
FACIAL_EMOTION_TRAINED_RUN, so that each mutant's test run does not train it again.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
# What the mutants are tested with: every test file but those that train, resume or average
# models (the modules mutated here load no TensorFlow) and Ray's (a cluster per mutant).
SKIPPED_TEST_FILES = {"test_resume.py", "test_training_mechanics.py", "test_distribute.py", "test_batch_norm.py",
                      "test_class_prior.py", "test_average.py", "test_model.py", "test_selection_and_consistency.py",
                      "test_packaging.py", "test_ray.py", "test_data.py"}
# Not mutated: the converter needs TensorFlow, tf2onnx and the network, and runs once by hand.
NOT_MUTATED = {"__init__", "convert_blazeface"}


def modules_without_tensorflow():
    """The package's modules whose import loads neither TensorFlow nor Keras."""
    found = []
    for path in sorted((PROJECT_DIR / "facial_emotion").glob("*.py")):
        if path.stem in NOT_MUTATED:
            continue
        check = (f"import sys, facial_emotion.{path.stem}; "
                 "sys.exit(1 if {'tensorflow', 'keras'} & set(sys.modules) else 0)")
        if subprocess.run([sys.executable, "-c", check], cwd=PROJECT_DIR, capture_output=True).returncode == 0:
            found.append(path.stem)
    return found


def test_files():
    return sorted(f"tests/{path.name}" for path in (PROJECT_DIR / "tests").glob("test_*.py")
                  if path.name not in SKIPPED_TEST_FILES)


def copy_checkout(work, modules, tests):
    """The checkout's files (tracked and untracked, not ignored) in `work`, with a [tool.mutmut]
    that mutates `modules`; mutmut's own results there are kept, so a run can continue."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=PROJECT_DIR, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (os.fsdecode(entry) for entry in listed)):
        source, target = PROJECT_DIR / name, work / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    pyproject = (work / "pyproject.toml").read_text()
    pyproject = pyproject[:pyproject.index("[tool.mutmut]")] + "\n".join([
        "[tool.mutmut]",
        'source_paths = ["facial_emotion/"]',
        # Workers forked from a process that has run TensorFlow hang in its thread pools: fork
        # them from a server that has only collected the tests.
        'process_isolation = "forkserver"',
        f"only_mutate = {json.dumps([f'facial_emotion/{module}.py' for module in modules])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'also_copy = ["models/", "dataset/", "predict.py", "emotion_recognition.py", "tests/", "README.md", "pyproject.toml", "requirements.txt"]', ""])
    (work / "pyproject.toml").write_text(pyproject)


# Tests that run predict.py in a subprocess from another folder: mutmut's code in that process
# reads its settings from the working folder's pyproject.toml, and fails. This loads them first,
# from the mutants' folder, in every Python process the tests start.
SITE_CUSTOMIZE = """import os
if os.environ.get("MUTANT_UNDER_TEST"):
    try:
        import mutmut.configuration
        here = os.getcwd()
        os.chdir(os.environ["MUTATION_FOLDER"])
        mutmut.configuration.config()
        os.chdir(here)
    except Exception:
        pass
"""


def subprocess_settings(work):
    """The environment that lets the tests' subprocesses run mutants."""
    site = work / "subprocess-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITE_CUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "MUTATION_FOLDER": str(work / "mutants")}


def train_shared_run(work):
    """The suite's shared tiny run (conftest.trained_run's recipe), trained once."""
    root = work / "trained-run"
    if not (root / "run" / "emotion_model.onnx").is_file():
        shutil.rmtree(root, ignore_errors=True)
        script = ("import sys; sys.path.insert(0, 'tests'); from conftest import copy_sample; "
                  "import emotion_recognition as er; from pathlib import Path; root = Path(sys.argv[1]); "
                  "data = copy_sample(root / 'data'); sys.exit(er.main(['--data-dir', str(data), '--output-dir', "
                  "str(root / 'run'), '--epochs', '1', '--batch-size', '8', '--seed', '1']))")
        subprocess.run([sys.executable, "-c", script, str(root)], cwd=work, check=True, capture_output=True)
    return root


def meta_path(work, module):
    return work / "mutants" / "facial_emotion" / f"{module}.py.meta"


def exit_codes(work, modules):
    """{module: {mutant: exit code or None}} of the last run in `work`."""
    return {module: json.loads(meta_path(work, module).read_text())["exit_code_by_key"]
            for module in modules if meta_path(work, module).is_file()}


def keep_earlier_results(work, modules, earlier, retested):
    """mutmut forgets every result when the tests change; a run with --mutants tests only those
    named, so the others get their earlier results back."""
    for module in modules:
        path = meta_path(work, module)
        if not path.is_file() or module not in earlier:
            continue
        meta = json.loads(path.read_text())
        for name, code in earlier[module].items():
            if name not in retested and meta["exit_code_by_key"].get(name) is None:
                meta["exit_code_by_key"][name] = code
        path.write_text(json.dumps(meta))


def scores(work, modules):
    """{module: (killed, mutants, [survivor names], {other status: count})} from mutmut's files."""
    from mutmut.stats import status_by_exit_code

    table = {}
    for module in modules:
        codes = exit_codes(work, [module]).get(module, {})
        statuses = {name: status_by_exit_code[code] for name, code in codes.items()}
        # A timeout is not counted as killed: it may be a hung worker, not a caught bug.
        killed = sum(status == "killed" for status in statuses.values())
        others = {}
        for status in statuses.values():
            if status != "killed":
                others[status] = others.get(status, 0) + 1
        table[module] = (killed, len(statuses), sorted(name for name, status in statuses.items()
                                                       if status == "survived"), others)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules of facial_emotion (default: all without TensorFlow)")
    parser.add_argument("--work", type=Path, default=PROJECT_DIR.parent / "runs" / "mutation")
    parser.add_argument("--children", type=int, default=os.cpu_count())
    parser.add_argument("--tests", nargs="+", metavar="FILE",
                        help="test files to run (default: every one but those that train; see SKIPPED_TEST_FILES)")
    parser.add_argument("--mutants", nargs="+", metavar="NAME", default=[],
                        help="test only these mutants (as `mutmut results` names them): an earlier run's "
                             "survivors, against new tests; the other mutants keep their earlier results")
    parser.add_argument("--report-only", action="store_true", help="print the last run's scores")
    args = parser.parse_args(argv)
    modules = args.modules or modules_without_tensorflow()
    work = args.work.resolve()
    if not args.report_only:
        work.mkdir(parents=True, exist_ok=True)
        copy_checkout(work, modules, args.tests or test_files())
        environment = {**os.environ, "FACIAL_EMOTION_TRAINED_RUN": str(train_shared_run(work)),
                       "MPLBACKEND": "Agg", "CI": "true", **subprocess_settings(work)}
        earlier = exit_codes(work, modules) if args.mutants else {}  # kept only for a --mutants run
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.children), *args.mutants],
                       cwd=work, env=environment, check=False)
        if args.mutants:
            keep_earlier_results(work, modules, earlier, set(args.mutants))
    total_killed = total = 0
    print(f"{'module':<14} {'killed':>7} {'mutants':>8} {'score':>7}  other")
    for module, (killed, count, survivors, others) in scores(work, modules).items():
        total_killed, total = total_killed + killed, total + count
        share = f"{killed / count:.1%}" if count else "-"
        print(f"{module:<14} {killed:>7} {count:>8} {share:>7}  "
              + ", ".join(f"{number} {status}" for status, number in sorted(others.items())))
        for name in survivors:
            print(f"    survived: {name}")
    if total:
        print(f"{'all':<14} {total_killed:>7} {total:>8} {total_killed / total:>7.1%}")


if __name__ == "__main__":
    main()
