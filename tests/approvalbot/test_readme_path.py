"""新用户只照 README 做：第一屏两条命令；紧接着是「接入真实的 Jenkins 与 Telegram（10 分钟）」清单；
README 里的 manage.py 命令在全新的机器上能用（make manage / .venv/bin/python）；docs/jenkins 说的与做的一致。"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
JENKINS = ROOT / "docs" / "jenkins"


def _section(title_prefix: str) -> str:
    start = README.index(f"\n## {title_prefix}")
    end = README.find("\n## ", start + 4)
    return README[start:end]


def test_first_screen_keeps_exactly_the_two_commands():
    before_checklist = README[:README.index("\n## ")]
    blocks = re.findall(r"```bash\n(.*?)```", before_checklist, re.S)
    assert len(blocks) == 1
    commands = [line.split("#")[0].strip() for line in blocks[0].strip().splitlines()]
    assert commands == ["make run", "make test"]


def test_the_ten_minute_checklist_comes_right_after():
    first_heading = re.search(r"\n## (.+)\n", README).group(1)
    assert first_heading == "接入真实的 Jenkins 与 Telegram（10 分钟）"
    checklist = _section("接入真实的 Jenkins 与 Telegram")
    steps = re.findall(r"^(\d+)\. \*\*(.+?)\*\*", checklist, re.M)
    assert [int(n) for n, _title in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 9
    expected_in_order = ["@BotFather", "拉进群", "/whoami", "写 `.env`", "TELEGRAM_DEFAULT_CHAT_ID", "WEB_HOST",
                         "DJANGO_ALLOWED_HOSTS", "disallowed_host", "create_api_token", "approval-api-token",
                         "Global Pipeline Libraries", "currentBuild.rawBuild", "Jenkinsfile.poll", "agent none",
                         "同意发布"]
    positions = [checklist.index(word) for word in expected_in_order]
    assert positions == sorted(positions), list(zip(expected_in_order, positions, strict=True))


def test_no_bare_python_manage_py_outside_the_production_section():
    """系统自带的 python 没有装依赖：README 给的命令都要能在全新机器上直接运行。"""
    production = _section("生产部署")
    outside = README.replace(production, "")
    bare = re.findall(r"(?<![\w/.])python manage\.py [^`\n]*", outside)
    # 唯一允许的是解释为什么不能这样写的那一句
    assert all("会失败" in README[README.index(b) - 40:README.index(b) + 60] for b in bare), bare
    assert 'make manage ARGS="create_api_token jenkins --scope jenkins --scope read"' in README


def test_make_manage_runs_a_manage_command_with_the_venv(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "MAKEFLAGS")}
    env.update({"APP_VAR_DIR": str(tmp_path), "APP_IGNORE_DOTENV": "1", "PATH": "/usr/bin:/bin"})
    # -o：不重建 venv（测试机上已经装好；全新机器上 make 会先装）
    done = subprocess.run(["make", "--no-print-directory", "-s", "-o", ".venv/.installed", "manage",
                           "ARGS=check --fail-level ERROR"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified" in done.stdout


def test_poll_example_claims_only_what_it_needs():
    poll = (JENKINS / "Jenkinsfile.poll").read_text(encoding="utf-8")
    library = (JENKINS / "vars" / "telegramApproval.groovy").read_text(encoding="utf-8")

    assert "不需要任何插件与 Jenkins 凭据" not in poll
    # 库确实用凭据 approval-api-token 调用服务：示例必须说出来
    assert "credentialsId ?: 'approval-api-token'" in library and "approval-api-token" in poll


def test_examples_wait_without_holding_an_executor():
    for name in ("Jenkinsfile.input", "Jenkinsfile.poll", "Jenkinsfile.webhook"):
        text = (JENKINS / name).read_text(encoding="utf-8")
        pipeline = text[text.index("pipeline {"):]
        top_agent = re.search(r"^    agent (\w+)", pipeline, re.M).group(1)
        assert top_agent == "none", name
    input_example = (JENKINS / "Jenkinsfile.input").read_text(encoding="utf-8")
    assert "agent any" in input_example and "执行器" in input_example  # 解释为什么不用 agent any


def test_library_borrows_an_executor_only_for_requests_and_avoids_raw_build():
    code = "\n".join(line for line in (JENKINS / "vars" / "telegramApproval.groovy").read_text(encoding="utf-8")
                     .splitlines() if not line.lstrip().startswith("//"))

    assert "rawBuild" not in code  # 沙箱里要脚本审批
    assert "currentBuild.getBuildCauses('hudson.model.Cause$UserIdCause')" in code
    assert "if (env.NODE_NAME)" in code and "node(label)" in code
