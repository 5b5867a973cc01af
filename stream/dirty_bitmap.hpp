// A plain bitmap of pages, one bit per pfn, in 64-bit words (the layout of
// Xen's log-dirty bitmap on x86_64).  Not thread-safe: the shared, atomic
// bitmap of a running guest lives in its backend; this is the engine's copy.
#pragma once

#include "stream/types.hpp"

#include <bit>
#include <cstdint>
#include <vector>

namespace fastmig {

class DirtyBitmap {
public:
    DirtyBitmap() = default;
    explicit DirtyBitmap(std::uint64_t nbits) { resize(nbits); }

    void resize(std::uint64_t nbits)
    {
        nbits_ = nbits;
        words_.assign((nbits + 63) / 64, 0);
    }
    std::uint64_t size() const { return nbits_; }

    void set(Pfn p) { words_[p / 64] |= std::uint64_t{1} << (p % 64); }
    void clear(Pfn p) { words_[p / 64] &= ~(std::uint64_t{1} << (p % 64)); }
    bool test(Pfn p) const { return (words_[p / 64] >> (p % 64)) & 1; }
    void clear_all() { std::fill(words_.begin(), words_.end(), 0); }
    void set_all()
    {
        std::fill(words_.begin(), words_.end(), ~std::uint64_t{0});
        trim();
    }

    // this |= other (same size).
    void merge(const DirtyBitmap& other)
    {
        for (std::size_t i = 0; i < words_.size() && i < other.words_.size(); ++i)
            words_[i] |= other.words_[i];
    }

    std::uint64_t count() const
    {
        std::uint64_t n = 0;
        for (auto w : words_)
            n += std::popcount(w);
        return n;
    }

    // Calls f(pfn) for every set bit, in increasing order.
    template <class F> void for_each_set(F&& f) const
    {
        for (std::size_t i = 0; i < words_.size(); ++i) {
            std::uint64_t w = words_[i];
            while (w) {
                unsigned b = std::countr_zero(w);
                f(Pfn(i * 64 + b));
                w &= w - 1;
            }
        }
    }

    std::uint64_t* words() { return words_.data(); }
    const std::uint64_t* words() const { return words_.data(); }
    std::size_t nr_words() const { return words_.size(); }

private:
    // Bits past the end must stay clear so count() and for_each_set() hold.
    void trim()
    {
        if (nbits_ % 64 && !words_.empty())
            words_.back() &= (std::uint64_t{1} << (nbits_ % 64)) - 1;
    }

    std::uint64_t nbits_ = 0;
    std::vector<std::uint64_t> words_;
};

} // namespace fastmig
