"""runtimes/transformers"""
