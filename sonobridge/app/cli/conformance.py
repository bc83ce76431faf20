"""``sonobridge conformance …`` and ``sonobridge ig …``: the conformance kit's commands.

Each part of the kit registers its own commands from its own module (the implementation guide
package, the DICOM conformance statement, the test kit), so that they grow independently.
"""

from __future__ import annotations

import typer

conformance_app = typer.Typer(
    help="The conformance kit: the implementation guide package, the DICOM conformance "
         "statement, and the test kit a platform runs against its integration or against us.",
    no_args_is_help=True)
ig_app = typer.Typer(help="Implementation guide packages (FHIR NPM): load one into the server.",
                     no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from sonobridge.app.cli import conformance_dicom, conformance_ig, conformance_kit

    for part in (conformance_ig, conformance_dicom, conformance_kit):
        part.register(conformance_app, ig_app)
    app.add_typer(conformance_app, name="conformance")
    app.add_typer(ig_app, name="ig")
