"""The researcher -> writer workflow."""

from workflows.research import RESEARCHER_NAME, WRITER_NAME, build_research_agents, build_research_workflow

__all__ = ["RESEARCHER_NAME", "WRITER_NAME", "build_research_agents", "build_research_workflow"]
