"""Verifiable instructions: IFEval's 25 checkers (`checkers`) and the strict/loose, prompt/instruction-level
scoring shared by the `ifeval` task and the built-in `general` task (`score`)."""
