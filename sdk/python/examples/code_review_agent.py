"""The seeds' code-review agent (DevDuck's CodeAnalysisAgent) on Ymera, in ~20 lines.

    NATS_URL=nats://127.0.0.1:4222 YMERA_API_KEY=ymk_... python code_review_agent.py

It answers chat requests ({"message": "review this ```python ...```"}) with the platform's
code-analysis report (complexity and security findings) as Markdown.
"""

from ymera import Agent, Message

agent = Agent(
    "code-reviewer",
    skills=["code_review", "complexity_analysis", "bug_detection", "optimization_suggestions"],
    description="Reviews code for bugs, security issues and complexity",
)


@agent.inbox
async def review(message: Message) -> dict:
    if "```" not in message.text:
        return {"success": False, "error": "No code blocks found to analyze. Please provide code within ``` blocks."}
    report = await agent.call("code-analysis.analyze", {"message": message.text, "format": "markdown"})
    return {"success": True, "agent": agent.name, "response": report["markdown"]}


if __name__ == "__main__":
    agent.run()
