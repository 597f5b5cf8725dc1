pub mod procfile;
