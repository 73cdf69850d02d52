"""The README keeps its promises: the newcomer commands come first and CI runs the same test
command; README and docs/ together document every command-line flag."""

from __future__ import annotations

import argparse
import re

from conftest import REPO, documentation

import bench
import ensemble
import plot
import report
import settings

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


def option_strings(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s not in ("-h", "--help")}


def test_every_flag_is_documented():
    docs = documentation()
    for module in (settings, plot, bench, ensemble, report):
        for name in option_strings(module.build_parser()):
            assert f"`{name}" in docs, f"{name} of {module.__name__}.py is not documented in README.md or docs/"


def test_help_shows_every_default():
    for module in (settings, plot, bench, ensemble, report):
        parser = module.build_parser()
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.default is not argparse.SUPPRESS:
                shown = formatter._get_help_string(action)
                assert "(default" in shown, f"{module.__name__}.py {action.option_strings[0]}: {shown!r}"
        assert "(default: " in parser.format_help()
