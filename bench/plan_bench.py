"""Benchmark the planner: N sessions from a CSV, a ~1 KB prompt template and a shared schema.

Measures, for each N: the wall time of `devin-fleet <command>` in a subprocess (interpreter
start-up included), that child's peak RSS, and the in-process time of load_manifest+build_plan.

    .venv/bin/python bench/plan_bench.py                 # N = 10,000
    .venv/bin/python bench/plan_bench.py --n 10000 --n 100000 --command validate
    .venv/bin/python bench/plan_bench.py --shape nested --shape fleets   # the other shapes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from apply_bench import as_installed

PROMPT = textwrap.dedent("""\
    Upgrade {{ item.repo }} to Python {{ vars.python }} ({{ campaign }}, fleet {{ fleet }}).
    {% if item.notes is defined %}Notes from the owning team: {{ item.notes }}{% endif %}

    1. Update every interpreter pin: pyproject.toml (requires-python and classifiers),
       Dockerfiles, CI matrices, tox.ini or noxfile.py, pre-commit hooks, and any
       runtime.txt or .python-version file you find in the repository.
    2. Upgrade dependencies that do not support Python {{ vars.python }} yet, preferring the
       smallest version bump that works; keep lock files consistent with the manifests.
    3. Fix deprecations and removals that break under {{ vars.python }}: distutils,
       asyncio.get_event_loop without a running loop, datetime.utcnow, and the like.
    4. Run the whole test suite and the linters; fix what fails because of the upgrade and
       nothing else. Do not reformat unrelated code.
    5. Open one pull request titled "Upgrade {{ item.repo }} to Python {{ vars.python }}",
       describing what changed and anything reviewers should look at closely.
    6. Report the result as structured output: status, the new version, whether tests passed,
       the pull request URL, and any blockers you could not resolve within
       {{ item.acu | default(8) }} ACUs.
    """)

MANIFEST = textwrap.dedent("""\
    version: 1
    campaign: bench
    vars:
      python: "3.12"
    defaults:
      max_acu_limit: 8
      tags: [team-platform]
      secret_ids: [secret-gh]
    budget:
      max_sessions: {n}
      max_total_acu: {acu}
    fleets:
      - name: services
        for_each:
          file: data/services.csv
        key: "{{{{ item.repo }}}}"
        session:
          title: "Upgrade {{{{ item.repo }}}} to Python {{{{ vars.python }}}}"
          repos: ["{{{{ item.repo }}}}"]
          tags: ["lang-{{{{ item.language | default('python') }}}}"]
          prompt_file: prompts/upgrade.md.j2
          max_acu_limit: "{{{{ item.acu | default(8) }}}}"
          structured_output_schema: {{file: schemas/result.schema.json}}
    """)

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["status", "python_version", "tests_passed"],
    "properties": {
        "status": {"type": "string", "enum": ["upgraded", "already_current", "blocked"]},
        "python_version": {"type": "string"},
        "tests_passed": {"type": "boolean"},
        "pr_url": {"type": "string"},
        "blockers": {"type": "array", "items": {"$ref": "#/definitions/blocker"}},
    },
    "definitions": {"blocker": {"type": "object", "properties": {"reason": {"type": "string"}}}},
}


HEAVY_PROMPT = textwrap.dedent("""\
    {%- set deps = (item.deps | default("")).split(";") if item.deps is defined else [] -%}
    Upgrade {{ item.repo | lower }} ({{ item.team | default("unowned") | title }}) to Python
    {{ vars.python }} for the {{ campaign | replace("-", " ") }} campaign.
    {% if deps %}
    These dependencies need attention first, in this order:
    {% for dep in deps | sort %}
      {{ loop.index }}. {{ dep | trim }}{% if dep.startswith("lib-") %} (internal: bump it in
         the monorepo first){% elif loop.last %} (the last one){% endif %}
    {% endfor %}
    {% else %}
    No dependency is known to block the upgrade.
    {% endif %}
    {% for step in vars.steps -%}
    {{ loop.index }}. {{ step | capitalize }}{{ "." if not step.endswith(".") }}
    {% endfor -%}
    {% if item.acu | default(8) | int > 8 %}This repository is large: plan before you edit.{% endif %}
    Report status, the new version, whether tests passed and the pull request URL.
    """)

HEAVY_MANIFEST = textwrap.dedent("""\
    version: 1
    campaign: bench-heavy
    vars:
      python: "3.12"
      steps:
        - update every interpreter pin, CI matrix and Dockerfile
        - fix deprecations that break under the new version
        - run the tests and the linters; fix only what the upgrade broke
        - open one pull request describing what changed
    defaults:
      max_acu_limit: 8
      tags: [team-platform]
    budget:
      max_sessions: {n}
      max_total_acu: {acu}
    fleets:
      - name: services
        for_each:
          file: data/services.csv
        key: "{{{{ item.repo }}}}"
        session:
          title: "Upgrade {{{{ item.repo | upper }}}} to {{{{ vars.python }}}}"
          repos: ["{{{{ item.repo }}}}"]
          tags: ["lang-{{{{ item.language | default('python') }}}}", "team-{{{{ item.team }}}}"]
          prompt_file: prompts/upgrade.md.j2
          max_acu_limit: "{{{{ item.acu | default(8) }}}}"
          structured_output_schema: {{file: schemas/result.schema.json}}
      - name: sweep
        for_each:
          matrix:
            repo: [{repos}]
            task: [unit-tests, lint, types, docs, deps]
            exclude:
              - task: docs
                repo: acme/web-0000
            include:
              - repo: acme/web-0001
                coverage_target: 90
              - repo: acme/legacy-portal
                task: unit-tests
        key: "{{{{ item.repo }}}}:{{{{ item.task }}}}"
        session:
          title: "{{{{ item.task | replace('-', ' ') | title }}}} for {{{{ item.repo }}}}"
          repos: ["{{{{ item.repo }}}}"]
          prompt: |
            {{% if item.task == "unit-tests" -%}}
            Raise coverage of {{{{ item.repo }}}} to {{{{ item.coverage_target | default(80) }}}}%.
            {{%- elif item.task in ["lint", "types"] -%}}
            Fix every {{{{ item.task }}}} error in {{{{ item.repo }}}} without disabling rules.
            {{%- else -%}}
            Bring {{{{ item.task }}}} of {{{{ item.repo }}}} up to date.
            {{%- endif %}}
            {{% for step in vars.steps %}}- {{{{ step }}}}
            {{% endfor %}}
    """)


def make_heavy_campaign(root: Path, n: int) -> Path:
    """A template-heavy campaign of about `n` sessions: a prompt file that loops over a list
    with conditionals and filters, plus a matrix fleet with include/exclude (5% of `n`)."""
    (root / "data").mkdir(parents=True)
    (root / "prompts").mkdir()
    (root / "schemas").mkdir()
    repos = max(1, n // 100)  # x 5 tasks, minus 1 excluded, plus 1 included
    csv_n = n - repos * 5
    with open(root / "data" / "services.csv", "w", encoding="utf-8", newline="") as f:
        f.write("repo,acu,language,team,deps\n")
        for i in range(csv_n):
            acu = "" if i % 3 else str(4 + i % 7)
            deps = ";".join(f"{'lib' if j % 2 else 'pkg'}-{(i * 7 + j) % 97}" for j in range(i % 6))
            lang = "python" if i % 4 else "cython"
            f.write(f"acme/service-{i:06d},{acu},{lang},team{i % 13},{deps}\n")
    (root / "prompts" / "upgrade.md.j2").write_text(HEAVY_PROMPT, encoding="utf-8")
    (root / "schemas" / "result.schema.json").write_text(json.dumps(SCHEMA, indent=2))
    manifest = root / "bench.yaml"
    names = ", ".join(f"acme/web-{i:04d}" for i in range(repos))
    manifest.write_text(HEAVY_MANIFEST.format(n=n + 10, acu=n * 100, repos=names), encoding="utf-8")
    return manifest


NESTED_PROMPT = textwrap.dedent("""\
    {%- macro owners(m) -%}{{ m.owners | map(attribute="handle") | join(", ") }}{%- endmacro -%}
    {%- set ns = namespace(risky=0) -%}
    {%- for m in item.modules if m.risk > 2 %}{% set ns.risky = ns.risky + 1 %}{% endfor -%}
    Patch {{ item.package }} {{ item.from }} -> {{ item.to }} in {{ item.repo }}
    ({{ item.meta.tier }} tier, {{ ns.risky }} risky module(s)).
    {% for m in item.modules | sort(attribute="name") %}
    - {{ m.name }} (owners: {{ owners(m) }})
      {%- if m.risk > 2 %}: review with {{ m.owners[0].handle }}{% endif %}
      {%- for f in m.files %}
      * {{ f.path }}{{ " (generated)" if f.generated }}{% if not loop.last %},{% endif %}
      {%- endfor %}
    {% endfor %}
    {{ vars.policy | selectattr("tier", "equalto", item.meta.tier) | map(attribute="text") | join(" ") }}
    """)

NESTED_MANIFEST = textwrap.dedent("""\
    version: 1
    campaign: bench-nested
    vars:
      policy:
        - {{tier: gold, text: "Gold services need two reviewers."}}
        - {{tier: silver, text: "Silver services need one reviewer."}}
        - {{tier: bronze, text: "Bronze services may self-merge after CI."}}
    defaults:
      max_acu_limit: 6
      tags: [security]
    budget:
      max_sessions: {n}
      max_total_acu: {acu}
    fleets:
      - name: patch
        for_each:
          file: data/targets.jsonl
        key: "{{{{ item.repo }}}}#{{{{ item.package }}}}"
        session:
          title: "{{{{ item.package }}}} {{{{ item.to }}}} in {{{{ item.repo }}}}"
          repos: ["{{{{ item.repo }}}}"]
          tags: ["tier-{{{{ item.meta.tier }}}}", "owner-{{{{ item.modules[0].owners[0].handle }}}}"]
          prompt_file: prompts/patch.md.j2
          max_acu_limit: "{{{{ 4 + item.modules | length }}}}"
          structured_output_schema: {{file: schemas/result.schema.json}}
    """)


def make_nested_campaign(root: Path, n: int) -> Path:
    """JSONL items with nested lists of dicts; a prompt with a macro, a namespace, nested loops,
    loop filters, sort/map/selectattr/join: the shapes of a security campaign's data."""
    (root / "data").mkdir(parents=True)
    (root / "prompts").mkdir()
    (root / "schemas").mkdir()
    with open(root / "data" / "targets.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            modules = [
                {
                    "name": f"mod{(i + j) % 23}",
                    "risk": (i * j) % 5,
                    "owners": [{"handle": f"dev{(i + j + k) % 41}"} for k in range(1 + j % 3)],
                    "files": [{"path": f"m{j}/f{k}.py", "generated": k == 1} for k in range(2)],
                }
                for j in range(1 + i % 4)
            ]
            tier = ("gold", "silver", "bronze")[i % 3]
            row = {"repo": f"acme/svc-{i:06d}", "package": f"lib{i % 17}", "from": "1.2.3"}
            row |= {"to": "1.2.9", "meta": {"tier": tier}, "modules": modules}
            f.write(json.dumps(row) + "\n")
    (root / "prompts" / "patch.md.j2").write_text(NESTED_PROMPT, encoding="utf-8")
    (root / "schemas" / "result.schema.json").write_text(json.dumps(SCHEMA, indent=2))
    manifest = root / "bench.yaml"
    manifest.write_text(NESTED_MANIFEST.format(n=n, acu=n * 20), encoding="utf-8")
    return manifest


def make_fleets_campaign(root: Path, n: int) -> Path:
    """Forty fleets, each with a prompt of its own (forty templates to compile), a large
    prompt (~6 KB of text around a dozen substitutions), ten tags and two secrets each."""
    (root / "prompts").mkdir(parents=True)
    (root / "schemas").mkdir()
    (root / "schemas" / "result.schema.json").write_text(json.dumps(SCHEMA, indent=2))
    filler = " ".join(f"Rule {k}: keep the change minimal and explain it." for k in range(120))
    fleets, per = [], max(1, n // 40)
    for fl in range(40):
        body = "\n".join(
            f"{{{{ item.name }}}} step {k} for fleet {fl}: {{{{ vars.target }}}}" for k in range(12)
        )
        (root / "prompts" / f"f{fl}.md.j2").write_text(body + "\n" + filler, encoding="utf-8")
        names = ", ".join(f"{{name: svc-{fl:02d}-{i:05d}}}" for i in range(per))
        tags = ", ".join(f'"t{t}-{{{{ item.name[:6] }}}}"' for t in range(10))
        fleets.append(
            f"""  - name: fleet-{fl:02d}
    for_each: {{items: [{names}]}}
    key: "{{{{ item.name }}}}"
    session:
      title: "Fleet {fl}: {{{{ item.name }}}}"
      tags: [{tags}]
      prompt_file: prompts/f{fl}.md.j2
      session_secrets:
        - {{key: TOKEN_A, value: {{env: TOKEN_A}}}}
        - {{key: TOKEN_B, value: {{env: TOKEN_B}}}}
"""
        )
    manifest = root / "bench.yaml"
    manifest.write_text(
        f"version: 1\ncampaign: bench-fleets\nvars: {{target: '3.12'}}\ndefaults: {{max_acu_limit: 5}}\n"
        f"budget: {{max_sessions: {n + 40}, max_total_acu: {n * 10}}}\nfleets:\n" + "".join(fleets),
        encoding="utf-8",
    )
    return manifest


SHAPES = {
    "simple": None,
    "heavy": make_heavy_campaign,
    "nested": make_nested_campaign,
    "fleets": make_fleets_campaign,
}


def make_campaign(root: Path, n: int) -> Path:
    """Write a campaign of `n` sessions under `root`; return the manifest's path."""
    (root / "data").mkdir(parents=True)
    (root / "prompts").mkdir()
    (root / "schemas").mkdir()
    with open(root / "data" / "services.csv", "w", encoding="utf-8", newline="") as f:
        f.write("repo,acu,language,notes\n")
        for i in range(n):
            acu = "" if i % 3 else str(4 + i % 7)
            notes = "" if i % 5 else f"pinned dependency {i}; bump it too"
            f.write(f"acme/service-{i:06d},{acu},{'python' if i % 4 else 'cython'},{notes}\n")
    (root / "prompts" / "upgrade.md.j2").write_text(PROMPT, encoding="utf-8")
    (root / "schemas" / "result.schema.json").write_text(json.dumps(SCHEMA, indent=2))
    manifest = root / "bench.yaml"
    manifest.write_text(MANIFEST.format(n=n, acu=n * 10), encoding="utf-8")
    return manifest


def cli_run(manifest: Path, command: str) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and output bytes of one `devin-fleet` run in a subprocess."""
    exe = Path(sys.executable).with_name("devin-fleet")
    args = [str(exe), command, str(manifest)] + (["-o", "json"] if command == "plan" else [])
    # getrusage(RUSAGE_CHILDREN) reports the largest child so far: run each in a fresh helper
    # process so that one N's figure does not hide behind a larger earlier one.
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "if r.returncode: sys.stderr.write(r.stderr.decode()); sys.exit(r.returncode)\n"
        "print(json.dumps([wall, rss, len(r.stdout)]))\n"
    )
    env = dict(os.environ, COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        raise SystemExit(f"devin-fleet {command} failed:\n{done.stderr}")
    wall, rss, size = json.loads(done.stdout)
    return wall, rss, size


def in_process(manifest: Path) -> tuple[float, float, int]:
    """Seconds to load the manifest and to build the plan, and the plan's size, in-process."""
    from launcher.spec.build import build_plan
    from launcher.spec.manifest import load_manifest

    t0 = time.perf_counter()
    loaded = load_manifest(manifest)
    t1 = time.perf_counter()
    plan = build_plan(loaded, environ={})
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, action="append", help="sessions to plan (repeatable; default 10000)"
    )
    parser.add_argument(
        "--command",
        choices=["plan", "validate"],
        default="plan",
        help="CLI command to time (plan runs with -o json)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="CLI runs per N (best is shown)")
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        action="append",
        help="simple: one CSV fleet, a prompt with two conditionals; heavy: a prompt file that "
        "loops over a list with filters, plus a matrix fleet with include/exclude; nested: "
        "JSONL items of nested lists, a macro, a namespace, nested loops, sort/map/selectattr; "
        "fleets: forty fleets with a 6 KB prompt each, ten tags and two secrets "
        "(repeatable; default simple and heavy)",
    )
    args = parser.parse_args()
    as_installed()
    ns = args.n or [10_000]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; command: devin-fleet "
        f"{args.command}{' -o json' if args.command == 'plan' else ''}"
    )
    print(
        f"{'shape':>7} {'N':>8} {'wall s':>8} {'peak MB':>8} {'out MB':>7} {'load s':>7} {'plan s':>7} "
        f"{'us/session wall':>16} {'us/session plan':>16} {'KB/session peak':>16}"
    )
    for shape in args.shape or ["simple", "heavy"]:
        for n in ns:
            with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
                manifest = (SHAPES[shape] or make_campaign)(Path(tmp), n)
                runs = [cli_run(manifest, args.command) for _ in range(max(1, args.repeat))]
                wall = min(r[0] for r in runs)
                rss = min(r[1] for r in runs)
                size = runs[0][2]
                load_s, plan_s, planned = in_process(manifest)
                assert shape != "simple" or planned == n, f"planned {planned}, expected {n}"
                print(
                    f"{shape:>7} {planned:>8,} {wall:>8.2f} {rss:>8.0f} {size / 1e6:>7.1f} "
                    f"{load_s:>7.3f} "
                    f"{plan_s:>7.2f} {wall / n * 1e6:>16.1f} {plan_s / n * 1e6:>16.1f} "
                    f"{rss * 1024 / n:>16.2f}"
                )


if __name__ == "__main__":
    main()
