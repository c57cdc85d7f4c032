"""SGLang serving plans (planner.runtimes.sglang.runtime)."""
