"""The read side: open a cube, parcel time series, chips, extraction, the REST service."""
