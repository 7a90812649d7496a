#!/usr/bin/env python3
"""Computes the expected output of flow_input.json over data/*.csv in plain Python (csv module,
decimal arithmetic), independently of Sluice. tests/api/example.rs hard-codes what this prints;
run it again only if you change the data or the flow."""

import csv
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).parent / "data"
NULLS = {"", "N/A"}  # csv.null_values: whole-field matches, before any trimming


def read(name):
    with open(HERE / name, newline="", encoding="utf-8") as f:
        return [{k: (None if v in NULLS else v) for k, v in row.items()} for row in csv.DictReader(f)]


def trim(s):
    return None if s is None else s.strip(" ")


# stg_customers: clean, then keep each customer's latest row (by updated_at).
latest = {}
for r in read("customers.csv"):
    cid = int(r["customer_id"])
    email = trim(r["email"])
    email = email.lower() if email else None
    country = trim(r["country"])
    row = {
        "customer_id": cid,
        "full_name": trim(r["full_name"]),
        "email": email,
        "country": country.upper() if country is not None else "UNKNOWN",
        "city": trim(r["city"]),
        "updated_at": r["updated_at"],
    }
    if cid not in latest or row["updated_at"] > latest[cid]["updated_at"]:
        latest[cid] = row
customers = latest

# stg_products
products = {}
for r in read("products.csv"):
    products[int(r["product_id"])] = {
        "category": trim(r["category"]).lower(),
        "unit_price": None if r["unit_price"] is None else Decimal(r["unit_price"]),
    }

# stg_orders: positive quantities, status normalised, exact duplicates removed.
orders = set()
for r in read("orders.csv"):
    q = None if r["quantity"] is None else int(r["quantity"])
    if q is None or q <= 0:
        continue
    orders.add((int(r["order_id"]), int(r["customer_id"]), int(r["product_id"]), q, r["order_date"],
                trim(r["status"]).lower()))

# order_lines: revenue-bearing orders of known customers and products.
lines = []
for (oid, cid, pid, q, day, status) in sorted(orders):
    if status not in ("completed", "shipped") or cid not in customers or pid not in products:
        continue
    p = products[pid]
    amount = None if p["unit_price"] is None else q * p["unit_price"]
    lines.append({"customer_id": cid, "category": p["category"], "month": day[:7], "quantity": q,
                  "amount": amount})

# customer_revenue + customer_ranking
revenue = []
for cid, c in customers.items():
    mine = [l for l in lines if l["customer_id"] == cid]
    total = sum((l["amount"] for l in mine if l["amount"] is not None), Decimal("0"))
    revenue.append((c["country"], cid, c["full_name"], len(mine), total))
ranking = []
for country in sorted({r[0] for r in revenue}):
    group = [r for r in revenue if r[0] == country]
    for r in group:
        rank = 1 + sum(1 for o in group if o[4] > r[4])
        ranking.append((country, rank, r[1], r[2], r[3], r[4]))
ranking.sort(key=lambda r: (r[0], r[1], r[2]))

# category_monthly
monthly = defaultdict(lambda: [0, Decimal("0")])
for l in lines:
    m = monthly[(l["category"], l["month"])]
    m[0] += l["quantity"]
    m[1] += l["amount"]
category_monthly = []
running = defaultdict(Decimal)
for (cat, month) in sorted(monthly):
    units, rev = monthly[(cat, month)]
    running[cat] += rev
    category_monthly.append((cat, month, units, rev, running[cat]))

print("customers (customer_id, full_name, email, country, city, updated_at):")
for cid in sorted(customers):
    c = customers[cid]
    print(" ", (cid, c["full_name"], c["email"], c["country"], c["city"], c["updated_at"]))
print("customer_ranking (country, country_rank, customer_id, full_name, orders, revenue):")
for r in ranking:
    print(" ", (r[0], r[1], r[2], r[3], r[4], f"{r[5]:.2f}"))
print("category_monthly (category, month, units, revenue, running_revenue):")
for r in category_monthly:
    print(" ", (r[0], r[1], r[2], f"{r[3]:.2f}", f"{r[4]:.2f}"))
