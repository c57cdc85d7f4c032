"""GGUF files on llama.cpp, llama-cpp-python and Ollama (planner.runtimes.gguf.runtime)."""
