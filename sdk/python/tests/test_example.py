"""examples/code_review_agent.py as a process, asked the seed's question."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ymera import Agent

from .conftest import Stack, run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "code_review_agent.py"


def test_code_review_example_answers_the_seed_request(stack: Stack) -> None:
    reviewer_key = stack.key("code-reviewer", ["comm:send", "analysis:run"])
    user_key = stack.key("py-user", ["comm:send"])
    env = {**os.environ, "NATS_URL": stack.nats_url, "YMERA_API_KEY": reviewer_key}
    process = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env)
    question = "Can you review this code for security bugs?\n```python\nimport os\ndef run(cmd):\n    os.system(cmd)\n    return eval(cmd)\n```"

    async def body() -> None:
        async with Agent("py-user", credential=user_key, url=stack.nats_url, register=False) as user:
            answer = None
            for _ in range(60):  # until the example has subscribed
                try:
                    answer = await user.request("code-reviewer", {"message": question}, timeout=5)
                    break
                except Exception:
                    continue
            assert answer is not None, "the example agent never answered"
            assert answer.payload["success"] is True, answer.payload
            assert "Code Analysis Report" in answer.payload["response"]
            refused = await user.request("code-reviewer", {"message": "hello"}, timeout=30)
            assert refused.payload["success"] is False
            assert "No code blocks" in refused.payload["error"]

    try:
        run(body())
    finally:
        process.terminate()
        assert process.wait(timeout=20) is not None
