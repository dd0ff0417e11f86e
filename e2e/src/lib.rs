//! Weft's end-to-end suite lives in `tests/`: it starts `weft up` inside a namespace that plays
//! the host and replays the Docker networking overview against it.
