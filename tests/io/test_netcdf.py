"""netCDF cases: exact round trips, field selection, quantized storage, attributes, errors."""
import numpy as np
import pytest
import xarray as xr

from elfcore.errors import FormatError
from elfcore.grid import field_atoms, make_case
from elfcore.io import read_case, read_field, write_case, write_field


@pytest.fixture
def case(elf_field, rng):
    fields = {"elf_pred": 0.9 * elf_field.values, "elf_ref": elf_field.values,
              "rho_ref": rng.random(elf_field.shape)}
    attrs = {"code": "cp2k", "pressure_gpa": 250.0, "md_step": 12, "settings": {"cutoff": 400, "xc": "PBE"},
             "converged": True}
    return make_case(field_atoms(elf_field), fields, attrs=attrs)


def test_field_round_trip_is_exact(tmp_path, elf_field):
    path = tmp_path / "f.nc"
    write_field(elf_field, path)
    out = read_field(path)
    np.testing.assert_array_equal(out.values, elf_field.values)
    np.testing.assert_array_equal(out.attrs["cell"], elf_field.attrs["cell"])
    np.testing.assert_array_equal(out.attrs["positions"], elf_field.attrs["positions"])
    assert out.name == "elf"


def test_case_round_trip_and_field_choice(tmp_path, case):
    path = tmp_path / "case.nc.gz"
    write_case(case, path)
    out = read_case(path)
    for key in ("elf_ref", "elf_pred", "rho_ref", "cell", "positions", "numbers"):
        np.testing.assert_array_equal(out[key].values, case[key].values)
    assert out.attrs["settings"] == {"cutoff": 400, "xc": "PBE"} and out.attrs["converged"] is True
    assert out.attrs["md_step"] == 12 and out.attrs["code"] == "cp2k"
    assert read_field(path).name == "elf_ref"  # default
    assert read_field(path, name="rho_ref").name == "rho_ref"
    with pytest.raises(FormatError, match="no field 'nope'.*elf_ref"):
        read_field(path, name="nope")


def test_quantized_uint16_reads_back_as_float(tmp_path, case):
    path = tmp_path / "q.nc"
    write_case(case, path, quantize={"elf_ref": "uint16"})
    raw = xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False)
    assert raw["elf_ref"].dtype == np.uint16
    raw.close()
    out = read_case(path)
    assert np.issubdtype(out["elf_ref"].dtype, np.floating)
    ref = case["elf_ref"].values
    step = (ref.max() - ref.min()) / 65534
    assert np.abs(out["elf_ref"].values - ref).max() <= 0.5 * step * (1 + 1e-6)
    np.testing.assert_array_equal(out["rho_ref"].values, case["rho_ref"].values)


def test_bad_quantize_and_non_case_files(tmp_path, case):
    with pytest.raises(FormatError, match="allowed"):
        write_case(case, tmp_path / "x.nc", quantize={"elf_ref": "float8"})
    with pytest.raises(FormatError, match="no field"):
        write_case(case, tmp_path / "x.nc", quantize={"missing": "uint16"})
    xr.Dataset({"t": ("x", np.arange(3.0))}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(FormatError, match="not an elfcore case"):
        read_case(tmp_path / "other.nc")


def test_classic_netcdf_is_read(tmp_path, case):
    path = tmp_path / "classic.nc"
    plain = case.copy()
    plain.attrs = {"code": "cp2k"}
    plain.to_netcdf(path, engine="scipy")
    out = read_case(path)
    np.testing.assert_array_equal(out["elf_ref"].values, case["elf_ref"].values)


def test_zero_size_grid(tmp_path, case):
    empty = case.isel(a=slice(0, 0))
    empty.attrs = {}
    path = tmp_path / "empty.nc"
    empty.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(FormatError, match="zero size"):
        read_case(path)
