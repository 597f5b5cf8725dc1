# Files of languages slipway has no built-in buildpack for:
#   FILE|LANGUAGE|a buildpack for it (shown as an example)
# Sourced by bin/detect and bin/compile; `unsupported DIR` prints the
# first match as FILE|LANGUAGE|URL.
languages=(
    "Gemfile|Ruby|https://github.com/heroku/heroku-buildpack-ruby"
    "composer.json|PHP|https://github.com/heroku/heroku-buildpack-php"
    "pom.xml|Java (Maven)|https://github.com/heroku/heroku-buildpack-java"
    "build.gradle|Java/Kotlin (Gradle)|https://github.com/heroku/heroku-buildpack-gradle"
    "build.gradle.kts|Kotlin (Gradle)|https://github.com/heroku/heroku-buildpack-gradle"
    "project.clj|Clojure (Leiningen)|https://github.com/heroku/heroku-buildpack-clojure"
    "build.sbt|Scala (sbt)|https://github.com/heroku/heroku-buildpack-scala"
    "mix.exs|Elixir|https://github.com/HashNuke/heroku-buildpack-elixir"
    "Cargo.toml|Rust|https://github.com/emk/heroku-buildpack-rust"
    "Dockerfile|Dockerfile|"
)
unsupported() {
    local entry
    for entry in "${languages[@]}"; do
        if [[ -f "$1/${entry%%|*}" ]]; then
            echo "$entry"
            return 0
        fi
    done
    return 1
}
