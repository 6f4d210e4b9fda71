"""Volume IO: read CT volumes (NIfTI, NRRD, NPZ, DICOM) into `Volume`, index DICOM studies, write DICOM series."""

from .dicom_index import InstanceGeometry, StudyIndex, index_dicom_study
from .dicom_write import write_dicom_series
from .load import load_volume
from .volume import Volume

__all__ = ["InstanceGeometry", "StudyIndex", "Volume", "index_dicom_study", "load_volume", "write_dicom_series"]
