SELECT product_id,
       trim(sku) AS sku,
       trim(product_name) AS product_name,
       lower(trim(category)) AS category,
       unit_price
FROM products
