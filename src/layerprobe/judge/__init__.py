"""Behaviours counted by a judge model (docs/judge.md): taxonomies of behaviours as data files, the
rule that reads a count from a reply, and the client of an OpenAI-compatible chat endpoint. Imports
neither torch nor openai until a client is made."""
