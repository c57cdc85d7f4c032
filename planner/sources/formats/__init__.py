"""sources/formats"""
