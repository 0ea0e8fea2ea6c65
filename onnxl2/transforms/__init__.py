"""Lossy transforms of single weights; each returns a candidate the emitter can write."""
