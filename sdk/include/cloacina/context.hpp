// cloacina/context.hpp — the JSON context a run carries from task to task.
//
// A Context is a JSON object. Inside a task handler it holds the task's input (the run's input merged
// with the outputs of its dependencies); every key the handler inserts or updates becomes the task's
// output, which the server merges into the dependents' inputs and into the run's final context.
// Removing a key only affects the handler's own view (a merge cannot delete).
#pragma once

#include "cloacina/error.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include <iosfwd>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace cloacina {

class Context {
public:
    Context() = default;
    /// Wraps an existing JSON object (no key counts as written).
    explicit Context(boost::json::object data) : data_(std::move(data)) {}
    /// Parses `value`, which must be a JSON object; throws ContextError otherwise.
    static Context from_json(const boost::json::value& value);
    static Context parse(std::string_view json_text);

    /// Adds a new key; throws ContextError when the key exists (use update() to change it).
    template <class T>
    void insert(std::string_view key, T&& value) {
        insert_value(key, boost::json::value_from(std::forward<T>(value)));
    }
    /// Changes an existing key; throws ContextError when it is missing.
    template <class T>
    void update(std::string_view key, T&& value) {
        update_value(key, boost::json::value_from(std::forward<T>(value)));
    }
    /// Sets a key whether or not it exists.
    template <class T>
    void upsert(std::string_view key, T&& value) {
        upsert_value(key, boost::json::value_from(std::forward<T>(value)));
    }
    /// Removes a key and returns its value, or nullopt when it was missing.
    std::optional<boost::json::value> remove(std::string_view key);

    /// The value under `key`, or nullptr when missing (the seed's `Option<&Value>`).
    [[nodiscard]] const boost::json::value* get(std::string_view key) const noexcept;
    /// The value converted to T, or nullopt when missing or of another type.
    template <class T>
    [[nodiscard]] std::optional<T> get_as(std::string_view key) const {
        const boost::json::value* value = get(key);
        if (value == nullptr) return std::nullopt;
        auto converted = boost::json::try_value_to<T>(*value);
        if (!converted) return std::nullopt;
        return std::move(*converted);
    }
    /// The value converted to T, or `fallback` (the seed's `.and_then(..).unwrap_or(..)`).
    template <class T>
    [[nodiscard]] T value_or(std::string_view key, T fallback) const {
        return get_as<T>(key).value_or(std::move(fallback));
    }
    [[nodiscard]] std::string value_or(std::string_view key, const char* fallback) const {
        return value_or<std::string>(key, std::string(fallback));
    }
    /// The value converted to T; throws ContextError when missing or of another type.
    template <class T>
    [[nodiscard]] T at(std::string_view key) const {
        auto value = get_as<T>(key);
        if (!value) throw ContextError("context key \"" + std::string(key) + "\" is missing or has another type");
        return std::move(*value);
    }

    [[nodiscard]] bool contains(std::string_view key) const noexcept { return get(key) != nullptr; }
    [[nodiscard]] std::size_t size() const noexcept { return data_.size(); }
    [[nodiscard]] bool empty() const noexcept { return data_.empty(); }
    [[nodiscard]] const boost::json::object& data() const noexcept { return data_; }
    /// The keys inserted, updated or upserted since construction, with their current values.
    [[nodiscard]] boost::json::object changes() const;
    /// Serialises the whole context.
    [[nodiscard]] std::string to_string() const;

    friend bool operator==(const Context& a, const Context& b) noexcept { return a.data_ == b.data_; }

private:
    void insert_value(std::string_view key, boost::json::value value);
    void update_value(std::string_view key, boost::json::value value);
    void upsert_value(std::string_view key, boost::json::value value);

    boost::json::object data_;
    std::set<std::string, std::less<>> written_;
};

/// Writes the context as JSON.
std::ostream& operator<<(std::ostream& out, const Context& context);

}  // namespace cloacina
