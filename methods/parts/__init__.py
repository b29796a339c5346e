"""Pieces shared by several methods: each exists exactly once here."""
