//! Container networking through CNI plugins; knows nothing of apps.
