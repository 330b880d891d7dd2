"""What every command's options share: click's context settings, a finite number type, and which options
the user gave."""

import math

import click

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf (a nan passes every range check: no comparison is true)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def explicit(ctx, name):
    """Whether the user gave option ``name`` (not its default)."""
    return ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
