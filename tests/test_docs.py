"""The README keeps its promises: the newcomer commands come first, CI runs the same test command,
the page stays short and shows the figure. README and docs/ together document every flag, link
only to files and headings that exist, and show only commands their scripts accept."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, documentation, pages

import bench
import ensemble
import grid
import plot
import report
from sgdr.data import cifar, loaders
from sgdr.paper import report as paper_report
from sgdr.paper import tables
from sgdr.run import settings

SCRIPT_MODULES = (plot, bench, ensemble, report, grid)

README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    return first_block.strip().splitlines()


def test_readme_opens_with_the_main_job_and_the_tests():
    assert README.index("```sh") < README.index("\n## ")
    main_job, tests = readme_commands()
    assert main_job.endswith("pip install -r requirements.txt && sh run.sh && python plot.py")
    assert tests.endswith("pip install -r requirements-dev.txt && pytest")


def test_ci_runs_the_readme_test_command():
    """CI runs the README's test command step by step, in order (with the lint between set-up and pytest)."""
    ci = [step.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() for step in line.split("&&")]
    steps = [step.strip() for step in readme_commands()[1].split("&&")]
    assert [ci.index(step) for step in steps] == sorted(ci.index(step) for step in steps)
    assert ci.index("ruff check .") < ci.index("pytest")


def parsers(parser) -> list[argparse.ArgumentParser]:
    """A parser and those of its subcommands (grid.py's status and submit)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(p for a in subs for sub in a.choices.values() for p in parsers(sub))]


def option_strings(parser) -> set[str]:
    return {
        s for p in parsers(parser) for action in p._actions for s in action.option_strings if s not in ("-h", "--help")
    }


def test_every_flag_is_documented():
    docs = documentation()
    for module in (settings, *SCRIPT_MODULES):
        for name in option_strings(module.build_parser()):
            assert f"`{name}" in docs, f"{name} of {module.__name__}.py is not documented in README.md or docs/"


def test_help_shows_every_default():
    for module in (settings, *SCRIPT_MODULES):
        for parser in parsers(module.build_parser()):
            formatter = parser._get_formatter()
            for action in parser._actions:
                if action.option_strings and action.default is not argparse.SUPPRESS:
                    shown = formatter._get_help_string(action)
                    assert "(default" in shown, f"{module.__name__}.py {action.option_strings[0]}: {shown!r}"
        assert "(default: " in module.build_parser().format_help()


# The front page ------------------------------------------------------------------------------


def test_readme_is_a_front_page_with_the_paper_and_the_figure():
    assert len(README) <= 9_000, f"README.md has {len(README):,} characters; move detail to docs/"
    assert "https://arxiv.org/abs/1608.03983" in README
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README)
    assert images, "the README shows a figure"
    for image in images:
        path = (REPO / image).resolve()
        assert path.parent == REPO / "docs" and path.is_file(), f"{image} is not a file committed in docs/"


# Links and anchors ---------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """Markdown without its code: fenced blocks and inline code spans can show brackets that are no links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped but - and _, spaces to -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", text), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(docs: dict[Path, str]) -> list[str]:
    """Every relative link (and #anchor) of ``docs`` that names no existing file or heading."""
    broken = []
    for page, text in docs.items():
        for target in LINK.findall(prose(text)):
            if re.match(r"[a-z]+:", target):  # https:, mailto: ...: not this repository's
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if file not in docs and not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor:
                headings = anchors(docs[file] if file in docs else file.read_text())
                if anchor not in headings:
                    broken.append(f"{page.name}: {target} (no heading #{anchor} in {file.name})")
    return broken


def test_every_relative_link_and_anchor_resolves():
    docs = pages()
    assert sum(len(LINK.findall(prose(text))) for text in docs.values()) > 20
    assert broken_links(docs) == []


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## What's here, and why\n")
    page = tmp_path / "page.md"
    text = (
        "[fine](other.md) [fine](other.md#whats-here-and-why) [fine](#a-heading) [web](https://example.org/x)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [not here](#other-page)\n\n"
        "## A heading\n\n```sh\n[not a link](missing-too.md)\n```\n"
    )
    assert broken_links({page: text}) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#nowhere (no heading #nowhere in other.md)",
        "page.md: #other-page (no heading #other-page in page.md)",
    ]


def test_heading_anchors_follow_githubs_rules():
    assert slug("Quick mode: the whole pipeline in minutes") == "quick-mode-the-whole-pipeline-in-minutes"
    assert slug("The paper's measurements") == "the-papers-measurements"
    assert slug("What `--recipe paper` does (and_why)") == "what---recipe-paper-does-and_why"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


# Documented commands -------------------------------------------------------------------------

SCRIPTS = {"train.py": settings.parse_args, **{f"{m.__name__}.py": m.build_parser().parse_args for m in SCRIPT_MODULES}}
# run.sh and grid.sh take flags of their own first, and pass every other argument to train.py.
# (each with how many words follow it)
SHELL_SCRIPTS = {
    "run.sh": {"--quick": 0, "--parallel": 0},
    "grid.sh": {"--print": 0, "--status": 0, "--submit": 0, "--dry-run": 0, "--sbatch": 1, "--signal-seconds": 1},
}


def commands_in(text: str) -> list[str]:
    """Every line of every fenced code block (continuation lines joined), and every inline code span,
    that runs a script: the candidates for ``check_command``."""
    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return [line for line in lines if re.search(r"\b(python3?|torchrun|sh|sbatch)\b", line)]


def simple_commands(line: str) -> list[list[str]]:
    """A shell line as its simple commands (split at &&, ||, |, ;), without comments, redirections
    and leading VAR=value assignments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words, redirect = [], [], False
    for token in lexer:
        if redirect:
            redirect = False
        elif token in ("&&", "||", "|", ";", "&"):
            commands.append(words)
            words = []
        elif token in (">", ">>", "<", "2>"):
            redirect = True
        elif words or not re.match(r"^[A-Z_][A-Z0-9_]*=", token):
            words.append(token)
    return [words for words in [*commands, words] if words]


def check_command(words: list[str]) -> str | None:
    """Why ``words`` is refused by the script it runs; None when its parser accepts it, or when it
    runs no script checked here. A synopsis (a word with <...>, [...] or ...) is no command: skipped."""
    if any(re.search(r"<\w|\.\.\.|^\[", word) for word in words):
        return None
    if words in (["torchrun"], ["sbatch"]):  # the program's name in a sentence
        return None
    if words[0] in ("torchrun", "sbatch"):  # their own options, then the script and its flags
        script = next((i for i, word in enumerate(words) if word.endswith((".py", ".sbatch"))), None)
    elif words[0] in ("python", "python3", "sh") and len(words) > 1:
        script = 1
    else:
        return None
    if script is None:
        return f"{words[0]} starts no script"
    name, args = Path(words[script]).name, words[script + 1 :]
    if name == "multinode.sbatch":  # its arguments are train.py's
        name = "train.py"
    if name in SHELL_SCRIPTS:
        while args and args[0] in SHELL_SCRIPTS[name]:  # as the scripts read them: first, in any order
            args = args[1 + SHELL_SCRIPTS[name][args[0]] :]
        name = "train.py"
    if name not in SCRIPTS:
        return None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            SCRIPTS[name](args)
    except SystemExit as exit_:
        return f"{' '.join(words)}: {err.getvalue().strip().splitlines()[-1] if err.getvalue() else exit_}"
    return None


def test_every_documented_command_is_accepted_by_its_script():
    checked, refused = set(), []
    for page, text in pages().items():
        for line in commands_in(text):
            for words in simple_commands(line):
                if (why := check_command(words)) is not None:
                    refused.append(f"{page.name}: {why}")
                checked.add(" ".join(words))
    assert refused == []
    for example in (  # the checker sees the commands it is meant to check
        "sh run.sh --quick",
        "python plot.py",
        "python train.py -e 200 --warm-restart -t0 200",
        "python report.py --runs outputs/grid",
        "sh grid.sh --train-subset 512 --test-subset 512",
        "python bench.py --models resnet34 wrn-28-10",
        "sh grid.sh --submit --sbatch --gres=gpu:1 --cpus-per-task=8",
        "sbatch --nodes=2 --ntasks-per-node=4 --gres=gpu:4 multinode.sbatch --recipe paper --model wrn-28-10 --resume",
    ):
        assert example in checked
    assert any(c.startswith("torchrun --nnodes=2") and "--model wrn-28-20" in c for c in checked)


@pytest.mark.parametrize(
    "line",
    [
        "python train.py -e 0",
        "python train.py --milestones 120 60",
        "python plot.py --t0 50",
        "sh run.sh --quick --sed 1",
        "torchrun --standalone --nproc_per_node=4 train.py --warm-restart -t0 0",
        "GRID_DIR=x sh grid.sh --print --recipe paper --loader torchvision",
        "sh grid.sh --submit --sbatch '--gres=gpu:1' --epochs -3",
        "sbatch --nodes=2 multinode.sbatch --epochs 0",
        "python bench.py --batch-size 0",
        "python ensemble.py",
        "python report.py --ensembles > out.txt",
    ],
)
def test_the_command_check_catches_a_wrong_command(line):
    (words,) = simple_commands(line)
    assert check_command(words) is not None


def test_the_command_check_reads_shell_lines_as_the_shell_does():
    assert simple_commands("MODEL=wrn-10-1 sh grid.sh --print > grid.txt && python report.py  # done") == [
        ["sh", "grid.sh", "--print"],
        ["python", "report.py"],
    ]
    assert check_command(["python", "train.py", "...", "|", "head"]) is None  # a synopsis, not a command
    assert check_command(["python", "setup.py", "--anything"]) is None  # not a script checked here


# The README's figure -------------------------------------------------------------------------


def load_figures():
    spec = importlib.util.spec_from_file_location("figures", REPO / "docs" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    return figures


def test_the_figure_draws_the_reference_schedules_as_the_code_runs_them(tmp_path):
    figures = load_figures()
    defaults = settings.parse_args([])
    run_sh = (REPO / "run.sh").read_text()
    reference = re.search(r"out=outputs epochs=(\d+) first=(\d+) second=(\d+) milestones=\"\"", run_sh)
    assert reference, "run.sh's reference runs: 200 epochs, T_0 = 50 and 200, the default milestones"
    epochs, first, second = map(int, reference.groups())
    assert figures.EPOCHS == epochs == 200
    assert figures.T_ZEROS == [first, second] == plot.build_parser().parse_args([]).t_zeros
    assert figures.MILESTONES == defaults.milestones == [60, 120, 160]
    assert figures.BATCHES == loaders.epoch_batches(cifar.TRAIN_IMAGES, defaults.batch_size, drop_last=False) == 391
    multistep, sgdr_50 = figures.batch_rates(False, 0), figures.batch_rates(True, 50)
    assert len(multistep) == len(sgdr_50) == 200 * 391
    assert multistep[0] == sgdr_50[0] == 0.05
    assert multistep[60 * 391] == pytest.approx(0.01)  # x 0.2 at epoch 60
    assert sgdr_50[50 * 391] < 1e-6 and sgdr_50[50 * 391 + 1] == 0.05  # the restart, one batch late
    out = tmp_path / "lr.png"
    assert figures.main([str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for png in (out, REPO / "docs" / "lr-schedules.png"):
        assert png.stat().st_size < 150_000


def code_files() -> list[Path]:
    """Every source file of the project: the scripts at the root and the package's modules."""
    return sorted([*REPO.glob("*.py"), *REPO.glob("*.sh"), *(REPO / "sgdr").rglob("*.py")])


def test_the_code_points_to_pages_that_exist():
    """Help texts and docstrings name the docs/ page of a topic, not a README section that may move."""
    sources = {path: path.read_text() for path in code_files()}
    named = {(path.name, page) for path, text in sources.items() for page in re.findall(r"docs/[\w-]+\.md", text)}
    assert ("settings.py", "docs/performance.md") in named and ("recipes.py", "docs/paper.md") in named
    assert [f"{name}: {page}" for name, page in named if not (REPO / page).is_file()] == []
    assert [path.name for path, text in sources.items() if re.search(r"in the README|README's \"", text)] == []


def test_the_papers_numbers_in_the_docs_are_the_reports():
    """The paper's test errors quoted in docs/paper.md and the README are report.py's tables, digit for digit."""
    paper = (REPO / "docs" / "paper.md").read_text()
    wide, wider = tables.PAPER_TABLE1["wrn-28-10"], tables.PAPER_TABLE1["wrn-28-20"]
    assert list(wide) == list(wider)
    for key in wide:
        name = paper_report.schedule_name(key).replace(" (lr x 0.2 at 60, 120, 160)", "")
        cells = " | ".join(f"{e:.2f}" for e in (*wide[key], *wider[key]))
        assert f"| {name} | {cells} |" in paper, name
    for (runs, m), (cifar10, cifar100) in tables.PAPER_TABLE2.items():
        assert (
            f"| {runs} run{'s' * (runs > 1)} x {m} snapshot{'s' * (m > 1)} | {cifar10:.2f} | {cifar100:.2f} |" in paper
        )
    readme = " ".join((REPO / "README.md").read_text().split())
    default, cosine = wide[(0.05, None)][0], wide[(0.05, (200, 1))][0]
    assert f"{cosine:.2f}% with one 200-epoch cosine (T_0 = 200) against {default:.2f}%" in readme
    assert f"{tables.PAPER_TABLE2[(16, 3)][0]:.2f}% for an ensemble of 16 runs' last 3 snapshots" in readme


def imported_modules(path: Path) -> set[str]:
    """The top-level names of the modules ``path`` imports."""
    return {name.split(".")[0] for name in imported_names(path)}


def imported_names(path: Path) -> set[str]:
    """The modules ``path`` imports, by their dotted names (``from sgdr.run import layout``: sgdr.run.layout)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            folder = REPO.joinpath(*node.module.split("."))
            if (folder / "__init__.py").is_file():  # from a package: its modules
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
    return names


def test_scripts_import_modules_never_scripts():
    """A script is an entry point; what several share belongs in a module they all import."""
    docs = [REPO / "docs" / "figures.py", REPO / "docs" / "quick_study.py"]
    code = sorted(REPO.glob("*.py")) + docs + sorted((REPO / "sgdr").rglob("*.py"))
    scripts = {Path(script).stem for script in SCRIPTS} | {"models"}
    found = {path.name: sorted(imported_modules(path) & scripts) for path in code if path.name != "models.py"}
    assert {name: scripts for name, scripts in found.items() if scripts} == {}
    assert imported_modules(REPO / "report.py") >= {"sgdr"}  # the check reads real imports


def strings_in(path: Path) -> list[str]:
    """The string literals of a Python file (docstrings aside, which may name a test that holds a promise)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_product_never_imports_the_tests():
    product = sorted(REPO.glob("*.py")) + sorted((REPO / "sgdr").rglob("*.py"))
    tests = {p.stem for p in (REPO / "tests").glob("*.py")} | {"tests"}
    assert {p.name: sorted(imported_modules(p) & tests) for p in product if imported_modules(p) & tests} == {}
    # Nor does it reach into tests/ by path (a string naming it), as a sys.path entry or a script to run.
    assert [p.name for p in product if any(re.search(r"\btests\b", s) for s in strings_in(p))] == []


# Layers of the package, top to bottom: a module may import the modules of its own folder (without a
# cycle) and those of the layers below it (docs/development.md).
LAYERS = [
    {"sgdr.testing"},
    {"sgdr.paper"},
    {"sgdr.run"},
    {"sgdr.data"},
    {"sgdr.training", "sgdr.parallel", "sgdr.drawing"},
    {"sgdr.storage"},
    {"sgdr.cli"},
]


def package_of(module: str) -> str:
    """``sgdr.run`` for ``sgdr.run.settings``; ``sgdr.cli`` for itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def layer_of(module: str) -> int:
    return next(k for k, layer in enumerate(LAYERS) if package_of(module) in layer)


def package_imports() -> dict[str, set[str]]:
    """Each module of the package, and the modules of the package it imports."""
    return {
        module_name(path): {m for m in imported_names(path) if m.startswith("sgdr.")}
        for path in sorted((REPO / "sgdr").rglob("*.py"))
        if path.name != "__init__.py"
    }


def test_imports_run_one_way():
    graph = package_imports()
    assert len(graph) > 20 and all(layer_of(m) is not None for m in graph)
    wrong = [
        f"{module} imports {other}"
        for module, imported in graph.items()
        for other in imported
        if layer_of(other) < layer_of(module)
        or (layer_of(other) == layer_of(module) and package_of(other) != package_of(module))
    ]
    assert wrong == []
    # Within a folder, no cycle: take the modules that import no one left, until none is left.
    left = dict(graph)
    while left:
        leaves = [m for m, imported in left.items() if not (imported & left.keys()) - {m}]
        assert leaves, f"an import cycle among {sorted(left)}"
        for m in leaves:
            del left[m]


def test_no_module_does_work_when_imported(tmp_path):
    """Importing every module prints nothing, writes nothing, and starts no download."""
    modules = [module_name(p) for p in sorted((REPO / "sgdr").rglob("*.py")) if p.name != "__main__.py"]
    modules = [m.removesuffix(".__init__") for m in modules] + [p.stem for p in REPO.glob("*.py")]
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_the_layout_table_lists_every_file_of_the_code():
    table = (REPO / "docs" / "development.md").read_text().split("## Layout", 1)[1].split("Imports run one way", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    code = {p.name for p in [*REPO.glob("*.py"), *REPO.glob("*.sh"), *REPO.glob("*.sbatch")]}
    code |= {"docs/figures.py", "docs/quick_study.py"}
    code |= {str(p.relative_to(REPO)) for p in (REPO / "sgdr").rglob("*.py") if p.name != "__init__.py"}
    assert listed == code
