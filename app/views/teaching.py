"""Teaching mode: one sentence per view saying what its colours mean, following the state."""
from __future__ import annotations

__all__ = ["teaching_text", "TEACHING_DEPS"]

TEACHING_DEPS = ("teaching", "case", "view_field", "iso", "n_shells", "k_max", "k_basis", "squeeze", "slice_mode", "preset")


def teaching_text(state) -> str:
    """Markdown with one sentence per view (empty when teaching mode is off)."""
    if not state.teaching:
        return ""
    info = state.case_info()
    where = f"{info.pressure_gpa:.1f} GPa" if info.pressure_gpa is not None else info.label
    parts = [f"**Guided tour — {where}.**"]
    parts.append(
        f"*3D view:* the surface encloses the space where the {state.view_field} ELF exceeds {state.iso:.2f}; "
        "ELF near 1 marks a localized electron pair (an H₂ bond), 0.5 is the uniform electron gas."
    )
    parts.append(
        "*Slice, left:* red where the model predicts more localization than DFT, blue where it predicts less; "
        "the colour scale is fixed at ±0.2 so cases can be compared. *Right:* the ELF itself (yellow = high)."
    )
    if state.correction_label() != "none":
        parts.append(
            f"*k-correction ({state.correction_label()}):* the smooth, long-wavelength part of the error is removed "
            "with a few Fourier components; watch the residual map lose its large blobs."
        )
    else:
        parts.append("*k-correction:* move the k-shells or k_max slider to remove the smooth part of the error.")
    parts.append(
        "*Line scan:* ELF along the line between two atoms (or two points clicked on the slice); a high plateau between them means they share a "
        "bond, a dip to low values means separate molecules."
    )
    if abs(state.squeeze - 1.0) > 1e-9:
        parts.append(
            f"*Squeeze ×{state.squeeze:.2f}:* the cell is scaled and the model predicts the ELF of the compressed "
            "structure — a prediction only, with no DFT reference; raise the iso value and watch the network "
            "connect or break."
        )
    else:
        parts.append("*Squeeze:* shrink the cell to see, as a prediction only, how the network forms under pressure.")
    return "\n\n".join(parts)
