"""apple"""
