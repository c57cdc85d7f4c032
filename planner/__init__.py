"""fitcheck: will this LLM run here, and how do I load it so that it does?

The import package is ``planner``; the command is ``fitcheck``. Stages, each its own module:
probe/profiles (hardware) -> sources/hub/local/catalog (what the model is) -> estimate and memory
(what it costs) -> solve (what fits) -> emit (config and load script) -> render/cli (people).
"""

__version__ = "0.1.0"
