//! REST/JSON mapping (being written).
